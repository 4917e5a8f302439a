"""The install state machine: what the director says -> what this device serves.

On a hint (MQTT) or every ``poll_interval_s``, :meth:`Reconciler.reconcile_once` asks the
updater for the verified target(s) and, when the target is not what runs already, walks
the install lifecycle (``agent/install_lifecycle.py``, its one table)::

    DOWNLOADING -> VERIFIED -> PREPARING -> WARMING -> [SHADOW] -> SWAPPED -> HEALTH_CHECK
                                                                          -> COMMITTED | REVERTED
                 \\-> FAILED (download, verification, load or shadow gate refused)
                 \\-> DOWNLOADING, transient (controller or broker away, download cut
                     off, timeout): retried with backoff, never a failure

Each step goes through that table's ``transition()`` (one it does not list raises
``IllegalPhaseError``), is a :class:`PhaseEvent`, and the retained :class:`DeviceState` is
republished, so the controller always sees the truth. The current model keeps serving
through every failure. Errors are told apart: a :class:`TransportError` is retried
with backoff (``agent/backoff.py``) on the next hint or when the backoff ends, and one
that cuts a download short is reported with ``transient=True`` in the phase it hit, so
the controller's gates never count it as an install failure; a :class:`TrustError` /
:class:`ArtifactError` / :class:`RuntimeBackendError` is reported (``RejectedEvent`` +
state error) and that artifact is tried again only after the refusal backoff
(``agent/refusals.py``). Whether a target may
run here at all is decided by the updater and ``install_policy``, not here.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import queue
import shutil
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from edgefleet.agent.backoff import Backoff
from edgefleet.agent.hooks import AgentHooks, NoHooks
from edgefleet.agent.install_lifecycle import InstallEvent, transition
from edgefleet.agent.mqtt_link import Hint
from edgefleet.agent.pipeline import FrameResult
from edgefleet.agent.refusals import RefusalBook
from edgefleet.agent.shadow import Agreement, ShadowTap, run_shadow
from edgefleet.agent.slots import DetectorLike, ModelSlots
from edgefleet.agent.store import DeviceStore, ModelPointer
from edgefleet.shared.errors import (
    ArtifactError,
    EdgefleetError,
    RuntimeBackendError,
    TransportError,
    TrustError,
)
from edgefleet.shared.protocol import (
    DeviceState,
    Fingerprint,
    Phase,
    PhaseEvent,
    RejectedEvent,
)

log = logging.getLogger(__name__)

STOP_CHECK_S = 0.5  # seconds; how often long waits look at the stop flag
DISK_MARGIN_BYTES = 16 * 1024 * 1024  # free space kept beyond an artifact's own length
# "no room": a full disk, a file size limit, a quota: transient, not the artifact's fault
_NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def no_room(e: BaseException) -> OSError | None:
    """The "disk full" OSError behind ``e`` (itself or a cause), if that is what it is."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_ROOM:
            return seen
        seen = seen.__cause__
    return None


class TargetLike(Protocol):
    """What reconcile reads from ``updater.VerifiedTarget``."""

    @property
    def target_path(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def release(self) -> int: ...
    @property
    def sha256(self) -> str: ...


T = TypeVar("T", bound=TargetLike)


class UpdaterLike(Protocol[T]):
    """``updater.ModelUpdater``'s seam; test doubles implement the same two methods."""

    def refresh(
        self, installed_releases: Mapping[str, int], fingerprint: Fingerprint | None
    ) -> Sequence[T]: ...

    def download(self, target: T, dest_dir: Path) -> Path: ...


class Reporter(Protocol):
    """Where state and events go (``mqtt_link.MqttLink`` implements it)."""

    def publish_state(self, state: DeviceState) -> None: ...

    def publish_event(self, event: PhaseEvent | RejectedEvent) -> None: ...


Loader = Callable[[Path], DetectorLike]


# -- health check -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None = None


# A new model whose detections per frame fall under this share of what the model before it
# found on the frames just before the swap has collapsed (all-zero scores, a broken head).
COLLAPSE_SHARE = 0.1
# Evidence the comparison needs: detections the old model found on the recent frames, and
# detections the new model is expected to find at the old rate over the check's frames.
# At 8 expected, a model as good as the old one (Poisson) finds none with p = 0.0003.
COLLAPSE_MIN_BEFORE = 20
COLLAPSE_MIN_EXPECTED = 8.0
# A collapse seen on little evidence is not final: the scene right after the swap may hold
# fewer objects than the frames the old model saw (a folder or a quiet street), and a model
# that finds a fifth of the old rate reads 0 in 9 expected about 1 time in 5. The check then
# watches more frames, until the old rate predicts this many detections (a model at 10 % of
# the old rate then reads 0 with p = 0.05, one at 20 % with p = 0.0025; a dead head always),
# or until COLLAPSE_MAX_FRAMES or the check's timeout, and judges all it saw.
COLLAPSE_DECIDE_EXPECTED = 30.0
COLLAPSE_MAX_FRAMES = 120
RECENT_FRAMES = 30  # the old model's frames remembered


def frame_problem(result: FrameResult) -> str | None:
    """Why one frame's output is not sane, or None."""
    if result.error:
        return f"model failed on a frame: {result.error}"
    if result.raw is not None and result.raw.nonfinite:
        return f"model output has {result.raw.nonfinite} non-finite values (NaN/Inf)"
    for d in result.detections:
        values = (d.confidence, *d.box_xyxy)
        if not all(math.isfinite(v) for v in values) or not 0.0 <= d.confidence <= 1.0:
            return f"non-finite or out-of-range output ({d.class_name} {d.confidence})"
    return None


def collapse_problem(results: Sequence[FrameResult], before: Sequence[int]) -> str | None:
    """All-zero scores on every frame, or detections per frame fallen to a small share of
    the previous model's on the recent frames (``before``: its detections per frame)."""
    raws = [r.raw for r in results if r.raw is not None]
    if raws and len(raws) == len(results) and all(r.max_score == 0.0 for r in raws):
        return "model scores are all zero on every frame"
    found, old = sum(len(r.detections) for r in results), sum(before)
    if not before or old < COLLAPSE_MIN_BEFORE:
        return None  # the old model saw too little here to compare with
    expected = old / len(before) * len(results)
    if expected < COLLAPSE_MIN_EXPECTED or found >= COLLAPSE_SHARE * expected:
        return None
    return (
        f"detections collapsed: {found / len(results):.2f} per frame against "
        f"{old / len(before):.2f} from the previous model on the recent frames"
    )


def judge(results: Sequence[FrameResult], budget_ms: float, before: Sequence[int] = ()) -> Verdict:
    """Pure verdict on the first frames after a swap: every output sane (raw outputs
    finite, scores not all zero, detections not collapsed against the previous model on
    the recent frames), latency in budget.

    Latency is judged on the median so one scheduler hiccup does not revert a good model.
    """
    for r in results:
        problem = frame_problem(r)
        if problem:
            return Verdict(False, problem)
    collapsed = collapse_problem(results, before)
    if collapsed:
        return Verdict(False, collapsed)
    median = statistics.median(r.latency_ms for r in results)
    if median > budget_ms:
        return Verdict(False, f"median latency {median:.0f} ms exceeds budget {budget_ms:.0f} ms")
    return Verdict(True)


class HealthCheck:
    """A frame sink that collects the first ``frames`` results of one armed slot (more when a
    collapse needs evidence), and remembers the detections per frame of the model before it."""

    def __init__(self, frames: int, budget_ms: float, recent: int = RECENT_FRAMES) -> None:
        self.frames, self.budget_ms = frames, budget_ms
        self._cond = threading.Condition()
        self._slot_id: int | None = None
        self._want = frames
        self._results: list[FrameResult] = []
        self._recent: deque[tuple[int, int]] = deque(maxlen=recent)  # (slot, detections)
        self._before: list[int] = []

    def arm(self, slot_id: int) -> None:
        with self._cond:
            self._slot_id, self._results, self._want = slot_id, [], self.frames
            self._before = [n for slot, n in self._recent if slot != slot_id]

    def on_frame(self, result: FrameResult) -> None:
        with self._cond:
            if result.slot_id != self._slot_id:
                if not result.error:
                    self._recent.append((result.slot_id, len(result.detections)))
                return
            if len(self._results) >= max(self.frames, COLLAPSE_MAX_FRAMES):
                return  # kept past _want: a collapse may ask for them
            self._results.append(result)
            self._cond.notify_all()

    def on_drop(self, n: int) -> None:
        pass

    def wait(self, timeout: float, stop: threading.Event) -> Verdict:
        deadline = time.monotonic() + timeout
        with self._cond:
            self._collect(deadline, stop)
            if len(self._results) < self.frames:
                seen, self._slot_id = len(self._results), None
                return Verdict(False, f"health check saw {seen} of {self.frames} frames")
            verdict = judge(self._results[: self._want], self.budget_ms, self._before)
            more = _collapse_frames(self._before)
            if not verdict.ok and "collapsed" in (verdict.reason or "") and more > self._want:
                self._want = more  # weak evidence: watch more frames before refusing
                self._collect(deadline, stop)
                verdict = judge(self._results[: self._want], self.budget_ms, self._before)
            self._slot_id = None
        return verdict

    def _collect(self, deadline: float, stop: threading.Event) -> None:
        """Wait (holding the condition) for ``_want`` results, the deadline or a stop."""
        while len(self._results) < self._want and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(min(STOP_CHECK_S, left))


def _collapse_frames(before: Sequence[int]) -> int:
    """Frames after which the old model's rate predicts COLLAPSE_DECIDE_EXPECTED detections."""
    if not before or sum(before) == 0:
        return 0
    rate = sum(before) / len(before)
    return min(COLLAPSE_MAX_FRAMES, math.ceil(COLLAPSE_DECIDE_EXPECTED / rate))


@dataclass(frozen=True)
class ShadowSettings:
    tap: ShadowTap  # a pipeline sink
    frames: int = 20  # sampled frames compared
    timeout_s: float = 60.0  # seconds to wait for them
    min_match_rate: float | None = None  # refuse the challenger below this; None: report only


# -- the state machine shell --------------------------------------------------------------


class InstallFailedError(Exception):
    """Internal: an install step failed; carries the lifecycle event to report."""

    def __init__(
        self, event: InstallEvent, reason: str, *, refuse: bool, transient: bool = False
    ) -> None:
        super().__init__(reason)
        self.event, self.reason, self.refuse = event, reason, refuse
        self.transient = transient  # retried with backoff; reported as no failure


@dataclass
class Identity:
    device_id: str
    labels: dict[str, str]
    fingerprint: Fingerprint
    agent_version: str | None = None


class Reconciler:
    def __init__(
        self,
        identity: Identity,
        *,
        updater: UpdaterLike[Any],
        store: DeviceStore,
        slots: ModelSlots,
        health: HealthCheck,
        reporter: Reporter,
        loader: Loader,
        stop: threading.Event,
        health_timeout_s: float = 30.0,  # seconds to wait for the health-check frames
        hooks: AgentHooks | None = None,  # tests' (agent/hooks.py); None: none
        shadow: ShadowSettings | None = None,  # None: no shadow phase unless a target asks
        shadow_tap: ShadowTap | None = None,  # for a rollout stage's shadow (the target's)
        refusals: RefusalBook | None = None,  # tests pass one with their own clock
        backoff: Backoff | None = None,  # after transient faults; None: 1 s up to 30 s
    ) -> None:
        self.identity = identity
        self.updater, self.store, self.slots = updater, store, slots
        self.health, self.reporter, self.loader = health, reporter, loader
        self.stop = stop
        self.health_timeout_s = health_timeout_s
        self.hooks = hooks if hooks is not None else NoHooks()
        self.shadow = shadow
        self.shadow_tap = shadow.tap if shadow is not None else shadow_tap
        self.last_agreement: Agreement | None = None
        self._challenger: DetectorLike | None = None
        self.phase = Phase.COMMITTED if store.state.current else Phase.IDLE
        self.error: str | None = None
        self.transient = False  # ``error`` is a transient fault, retried with backoff
        self.backoff = backoff if backoff is not None else Backoff(1.0, 30.0)
        # Refused artifacts: tried again after a backoff, a new release or director version.
        self.refused = refusals if refusals is not None else RefusalBook()
        self._quiet_transport = False
        self._last_trust_error: str | None = None

    # -- loop --------------------------------------------------------------------------

    def run(
        self,
        hints: queue.Queue[Hint],
        poll_interval_s: float,
        *,
        connected_poll_s: float | None = None,  # seconds between polls while MQTT is up
        link_up: Callable[[], bool] | None = None,
    ) -> None:
        """Reconcile on every hint and every poll interval until ``stop`` is set.

        While the broker connection is up and the last pass ended settled (idle or
        committed), a new assignment arrives as a retained hint on a persistent session, so
        the director is polled only every ``connected_poll_s`` (a safety net); otherwise
        every ``poll_interval_s``.
        """
        self.publish_state()
        while not self.stop.is_set():
            self.run_once_safely()
            self._wait_for_hint(hints, poll_interval_s, connected_poll_s, link_up)

    def _wait_for_hint(
        self,
        hints: queue.Queue[Hint],
        poll_interval_s: float,
        connected_poll_s: float | None = None,
        link_up: Callable[[], bool] | None = None,
    ) -> None:
        waited = 0.0
        while not self.stop.is_set():
            # A failed install (interrupted download, full disk) is retried at the short
            # interval even while connected: no hint will come for it.
            settled = (
                self.phase in (Phase.IDLE, Phase.COMMITTED)
                and not self._quiet_transport  # the last refresh reached the controller
                and self._last_trust_error is None  # ... and trusted what it found
            )
            slow = connected_poll_s is not None and settled and link_up is not None and link_up()
            interval = connected_poll_s if slow and connected_poll_s else poll_interval_s
            if self.backoff.delay_s is not None:  # a transient fault: try again sooner
                interval = min(interval, self.backoff.delay_s)
            left = interval - waited
            if left <= 0:
                return
            try:
                hint = hints.get(timeout=min(STOP_CHECK_S, left))
            except queue.Empty:
                waited += min(STOP_CHECK_S, left)
                continue
            self._take(hint)
            while True:  # coalesce: many hints, one refresh
                try:
                    self._take(hints.get_nowait())
                except queue.Empty:
                    return

    def _take(self, hint: Hint) -> None:
        log.debug("hint from %s (director version %s)", hint.source, hint.director_version)
        self.refused.announced(hint.director_version)
        if hint.source == "command" and self.refused:
            log.info("refresh command: trying %d refused artifact(s) again", len(self.refused))
            self.refused.clear()

    def run_once_safely(self) -> None:
        try:
            self.reconcile_once()
        except Exception:  # the loop must outlive any bug; the current model keeps serving
            log.exception("reconcile pass failed unexpectedly; will try again")

    def reconcile_once(self) -> None:
        target = self._refresh()
        current = self.store.state.current
        if target is not None and current is not None and _renamed(current, target):
            self._adopt_name(current, target)
            return
        if target is None or (current is not None and current.sha256 == target.sha256):
            if target is not None or not self._quiet_transport:
                self._settle()  # nothing (left) to install: a transient fault is over
            return
        # A refresh that worked does not end the backoff: a download that keeps breaking
        # off behind a working metadata endpoint still waits longer each time.
        if not self.refused.may_try(target.sha256, target.release):
            return
        self.install(target)

    def _refresh(self) -> TargetLike | None:
        ident = self.identity
        try:
            targets = self.updater.refresh(self.store.installed_releases(), ident.fingerprint)
        except TransportError as e:
            self._transport_down(e)
            return None
        except TrustError as e:
            if e.reason != self._last_trust_error:  # report a refusal once, not every poll
                self._reject("director/image metadata", e.reason)
            self._last_trust_error = e.reason
            return None
        self._last_trust_error = None
        self._quiet_transport = False
        if len(targets) > 1:
            log.warning("director lists %d targets; this agent runs the first", len(targets))
        return targets[0] if targets else None

    def _adopt_name(self, current: ModelPointer, target: TargetLike) -> None:
        """The bytes it runs, signed under another name (a re-signed copy, or a version
        pushed with the same bytes): record and report the new name, no reinstall."""
        pointer = dataclasses.replace(
            current,
            model=target.model,
            version=target.version,
            release=target.release,
            target=target.target_path,
        )
        try:
            self.store.commit(pointer)
        except OSError as e:
            log.warning("cannot record %s %s durably: %s", target.model, target.version, e)
            return
        self.slots.rename(pointer)
        self.refused.forget(target.sha256)
        log.info("%s %s has the bytes already running: now reported under that name",
                 target.model, target.version)  # fmt: skip
        self._transition(InstallEvent.RENAME, target)

    def _transport_down(self, e: TransportError) -> None:
        wait = self.backoff.fault()
        if not self._quiet_transport:
            log.warning("controller unreachable (%s); retrying in %.1f s", e.reason, wait)
            self._quiet_transport = True

    def _settle(self) -> None:
        """Leave a transient report once nothing is left to install."""
        self.backoff.ok()
        if not self.transient:
            return
        settle = InstallEvent.SETTLE if self.store.state.current else InstallEvent.SETTLE_IDLE
        self.phase = transition(self.phase, settle)
        self.transient, self.error = False, None
        self.publish_state()

    # -- one install -------------------------------------------------------------------

    def install(self, target: TargetLike) -> Phase:
        """Walk one target through the phases; returns the final phase."""
        self._challenger = None
        self._transition(InstallEvent.START, target)
        try:
            pointer = self._fetch(target)
            slot_id = self._prepare(target, pointer)
            self._shadow(target)
            phase = self._swap_and_check(target, pointer, slot_id)
        except InstallFailedError as f:
            if f.refuse:
                again = self.refused.refuse(target.sha256, target.release, f.reason)
                log.info("will try %s again in %.0f s or on a new release",
                         target.target_path, again.retry_at - self.refused.clock())  # fmt: skip
                self._reject(target.target_path, f.reason)
            self._transition(f.event, target, f.reason, transient=f.transient)
            return self.phase
        self.refused.forget(target.sha256)
        self.backoff.ok()
        return phase

    def _fetch(self, target: TargetLike) -> ModelPointer:
        self._check_room(target)
        try:
            path = self.updater.download(target, self.store.models_dir)
            name = self.store.adopt(path, target.sha256, plan_info=_plan_info(target))
        except TransportError as e:
            wait = self.backoff.fault()
            raise InstallFailedError(
                InstallEvent.INTERRUPT,
                f"download interrupted: {e.reason}; retrying in {wait:.1f} s",
                refuse=False,
                transient=True,
            ) from e
        except (TrustError, ArtifactError, OSError) as e:
            full = no_room(e)
            if full is not None:  # retried on the next poll; nothing partial is kept
                raise InstallFailedError(
                    InstallEvent.FAIL, f"no room to store the download: {full}", refuse=False
                ) from e
            if isinstance(e, OSError):
                raise InstallFailedError(
                    InstallEvent.FAIL, f"cannot store the download: {e}", refuse=False
                ) from e
            raise InstallFailedError(
                InstallEvent.FAIL, f"artifact refused: {e.reason}", refuse=True
            ) from e
        self._transition(InstallEvent.VERIFY, target)
        return ModelPointer(
            model=target.model,
            version=target.version,
            release=target.release,
            sha256=target.sha256,
            file=name,
            target=target.target_path,
        )

    def _check_room(self, target: TargetLike) -> None:
        length = getattr(target, "length", None)
        if not isinstance(length, int):
            return
        try:
            free = shutil.disk_usage(self.store.data_dir).free
        except OSError:
            return  # cannot tell: the download itself will say
        if free < length + DISK_MARGIN_BYTES:
            raise InstallFailedError(
                InstallEvent.FAIL,
                f"not enough disk space: {length} bytes for the model and "
                f"{DISK_MARGIN_BYTES} kept free, {free} free; tried again on the next poll",
                refuse=False,
            )

    def _prepare(self, target: TargetLike, pointer: ModelPointer) -> int:
        self._transition(InstallEvent.PREPARE, target)  # ONNX: no engine to build
        self._transition(InstallEvent.WARM, target)
        try:
            detector = self.loader(self.store.artifact_path(pointer))
        except (RuntimeBackendError, ArtifactError) as e:
            raise InstallFailedError(
                InstallEvent.FAIL, f"model does not load: {e.reason}", refuse=True
            ) from e
        try:
            slot_id = int(self.slots.stage(detector, pointer).id)
        except (RuntimeBackendError, ArtifactError) as e:
            detector.close()
            raise InstallFailedError(
                InstallEvent.FAIL, f"warm-up failed: {e.reason}", refuse=True
            ) from e
        self._challenger = detector  # staged, not serving: the shadow phase may run it
        return slot_id

    def _shadow(self, target: TargetLike) -> None:
        """Challenger beside champion on sampled live frames; reported, and a gate when
        ``min_match_rate`` is set. Skipped on a first install (no champion to compare)."""
        cfg, challenger = self._shadow_settings(target), self._challenger
        if cfg is None or challenger is None or self.slots.active is None:
            return
        self._transition(InstallEvent.SHADOW, target)
        try:
            result = run_shadow(
                cfg.tap, challenger.detect, frames=cfg.frames, timeout=cfg.timeout_s,
                stop=self.stop,
            )  # fmt: skip
        except (RuntimeBackendError, ArtifactError) as e:
            self.slots.discard_staged()
            raise InstallFailedError(
                InstallEvent.FAIL, f"challenger failed in shadow: {e.reason}", refuse=True
            ) from e
        self.last_agreement = result
        self._transition(InstallEvent.SHADOW_DONE, target, result.summary())
        if cfg.min_match_rate is not None and result.match_rate < cfg.min_match_rate:
            self.slots.discard_staged()
            raise InstallFailedError(
                InstallEvent.FAIL,
                f"{result.summary()}; below the required {cfg.min_match_rate:.0%}",
                refuse=True,
            )

    def _shadow_settings(self, target: TargetLike) -> ShadowSettings | None:
        """The rollout stage's shadow (signed into the director target) over the agent
        config's; the config's alone when the target says nothing."""
        wire = getattr(target, "shadow", None)
        if not wire or self.shadow_tap is None:
            return self.shadow
        try:
            permille = wire.get("min_match_permille")  # canonical JSON: integers only
            return ShadowSettings(
                self.shadow_tap,
                frames=max(1, int(wire.get("frames", 20))),
                timeout_s=max(1, int(wire.get("timeout_s", 60))),
                min_match_rate=None if permille is None else int(permille) / 1000,
            )
        except (TypeError, ValueError):
            log.warning("ignoring a malformed shadow request in %s: %r", target.target_path, wire)
            return self.shadow

    def _swap_and_check(self, target: TargetLike, pointer: ModelPointer, slot_id: int) -> Phase:
        self.health.arm(slot_id)
        self.slots.swap()
        self._transition(InstallEvent.SWAP, target)
        self._transition(InstallEvent.CHECK, target)
        verdict = self.health.wait(self.health_timeout_s, self.stop)
        if verdict.ok:
            try:
                self.store.commit(pointer)
            except OSError as e:
                verdict = Verdict(False, f"cannot record the new model durably: {e}")
        if not verdict.ok:
            self.slots.revert()
            raise InstallFailedError(
                InstallEvent.REVERT, verdict.reason or "health check failed", refuse=True
            )
        self.slots.commit()
        self._transition(InstallEvent.COMMIT, target)
        log.info("committed %s %s", target.model, target.version)
        return Phase.COMMITTED

    # -- reporting ---------------------------------------------------------------------

    def _transition(
        self,
        event: InstallEvent,
        target: TargetLike,
        reason: str | None = None,
        *,
        transient: bool = False,
    ) -> None:
        """Take ``event`` through the lifecycle table (IllegalPhaseError if it has no
        such step from the current phase: nothing is reported then) and report it."""
        phase = transition(self.phase, event)
        self.phase, self.transient = phase, transient
        self.error = reason if transient or phase in (Phase.FAILED, Phase.REVERTED) else None
        if reason:
            log.warning("%s %s: %s: %s", target.model, target.version, phase.value, reason)
        else:
            log.info("%s %s: %s", target.model, target.version, phase.value)
        ident = self.identity
        self._send_event(
            PhaseEvent(
                device_id=ident.device_id,
                phase=phase,
                model=target.model,
                version=target.version,
                reason=reason,
                transient=transient,
            )
        )
        self.publish_state()
        if not transient:  # a transient one is a report, not a step
            self.hooks.on_phase(phase, self.stop)

    def _reject(self, what: str, reason: str) -> None:
        log.error("refused %s: %s", what, reason)
        self.error, self.transient = reason, False  # a refusal is no transient fault
        self._send_event(RejectedEvent(device_id=self.identity.device_id, what=what, reason=reason))
        self.publish_state()

    def state(self) -> DeviceState:
        cur, ident = self.store.state.current, self.identity
        return DeviceState(
            device_id=ident.device_id,
            model=cur.model if cur else None,
            version=cur.version if cur else None,
            target=cur.target if cur else None,
            sha256=cur.sha256 if cur else None,
            phase=self.phase,
            error=self.error,
            transient=self.transient,
            labels=ident.labels,
            fingerprint=ident.fingerprint,
            agent_version=ident.agent_version,
        )

    def publish_state(self) -> None:
        self._publish(lambda: self.reporter.publish_state(self.state()))

    def _send_event(self, event: PhaseEvent | RejectedEvent) -> None:
        self._publish(lambda: self.reporter.publish_event(event))

    @staticmethod
    def _publish(send: Callable[[], None]) -> None:
        try:
            send()
        except EdgefleetError as e:  # reporting must never break an install
            log.warning("could not publish: %s", e.reason)


def _plan_info(target: TargetLike) -> Mapping[str, Any] | None:
    """A TensorRT plan's model info from its signed target; None for an ONNX."""
    if getattr(target, "format", "onnx") != "tensorrt-plan":
        return None
    info = (getattr(target, "custom", None) or {}).get("model_info")
    if not isinstance(info, Mapping):
        raise ArtifactError("a tensorrt-plan target without model_info cannot run")
    return info


def _renamed(current: ModelPointer, target: TargetLike) -> bool:
    """Same bytes as the model running, under another name or release."""
    return current.sha256 == target.sha256 and (
        (current.model, current.version, current.release)
        != (target.model, target.version, target.release)
    )
