"""Budgeted frame sampling: uncertain frames back to the controller for annotation.

Named strategies look at each frame's detections and the candidates below the confidence
cut; the first one that matches *and* is within its budget (per minute, hour, day, and
bytes per day) captures the frame. The decision is pure (:class:`SamplingPolicy`, clock and
randomness passed in); :class:`Sampler` is the shell: a frame-loop sink that hands chosen
frames to a background thread, which encodes a JPEG plus a JSON sidecar into a disk spool
with a cap and uploads the spool to ``POST /v1/samples`` (with the device's upload
credential from enrollment as ``Authorization: Bearer``). A sample leaves the spool only
once the controller stored it, so nothing is lost across restarts or outages.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.agent.refresh_schedule import RefreshSchedule
from edgefleet.agent.spool import DiskSpool, Entry
from edgefleet.shared.errors import TransportError
from edgefleet.shared.protocol import TelemetryWindow, utcnow
from edgefleet.shared.sampling import DriftSamplingConfig, SamplingConfig, StrategyConfig

from edgefleet.runtime.backend import Detection

if TYPE_CHECKING:
    from edgefleet.agent.pipeline import FrameResult

log = logging.getLogger(__name__)

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0  # seconds


# --- the pure part -----------------------------------------------------------------------


class Budget:
    """Counts and bytes of captures in sliding windows (times in seconds, from the caller).

    ``reserve``: the share of the hourly and daily limits held back unless ``drifting``.
    ``pace``: outside drift, captures come from a token bucket refilled at the (reserved)
    hourly limit spread over the hour, holding at most a sixth of it, so a steady stream of
    matching frames does not spend the hour in its first minutes. Drift frames beyond the
    limits are the policy's burst (:class:`SamplingPolicy`), not this budget's.
    """

    def __init__(self, s: StrategyConfig, *, reserve: float = 0.0, pace: bool = False) -> None:
        self.limits = ((MINUTE, s.per_minute), (HOUR, s.per_hour), (DAY, s.per_day))
        self.bytes_per_day = s.bytes_per_day
        self.reserve, self.pace = reserve, pace
        self._taken: deque[tuple[float, int]] = deque()
        span = HOUR if s.per_hour else DAY  # pace over the hour, else over the day
        normal = self._normal(s.per_hour or s.per_day or 0)
        self._rate = normal / span if normal else None  # tokens per second
        self._capacity = max(1.0, normal / 6)
        self._tokens = self._capacity
        self._refilled_at: float | None = None

    def _normal(self, limit: int) -> int:
        """What a limit leaves outside drift: at least one frame when it allows any."""
        if limit <= 0 or self.reserve <= 0:
            return limit
        return max(1, math.floor(limit * (1 - self.reserve)))

    def _trim(self, now: float) -> None:
        while self._taken and self._taken[0][0] <= now - DAY:
            self._taken.popleft()

    def _refill(self, now: float) -> None:
        if self._rate is None:
            return
        if self._refilled_at is not None and now > self._refilled_at:
            self._tokens = min(self._capacity,
                               self._tokens + (now - self._refilled_at) * self._rate)  # fmt: skip
        self._refilled_at = now if self._refilled_at is None else max(now, self._refilled_at)

    def allows(self, now: float, nbytes: int = 0, *, drifting: bool = False) -> bool:
        self._trim(now)
        for span, limit in self.limits:
            if limit is None:
                continue
            cap = limit if drifting or span == MINUTE else self._normal(limit)
            if sum(1 for t, _ in self._taken if t > now - span) >= cap:
                return False
        if self.bytes_per_day is not None and (
            sum(b for _, b in self._taken) + nbytes > self.bytes_per_day
        ):
            return False
        if self.pace and not drifting and self._rate is not None:
            self._refill(now)
            return self._tokens >= 1.0
        return True

    def take(self, now: float, nbytes: int, *, drifting: bool = False) -> None:
        self._taken.append((now, nbytes))
        if self.pace and not drifting and self._rate is not None:
            self._refill(now)
            self._tokens = max(0.0, self._tokens - 1.0)

    def take_burst(self, now: float, nbytes: int) -> bool:
        """A drift burst frame: past the count limits on purpose, never past the bytes.
        It counts in the windows like any other (so the hour after a drift is quieter)."""
        self._trim(now)
        if self.bytes_per_day is not None and (
            sum(b for _, b in self._taken) + nbytes > self.bytes_per_day
        ):
            return False
        self._taken.append((now, nbytes))
        return True

    def carry(self, old: Budget) -> None:
        """Keep what ``old`` (the same strategy before new settings) took and saved up."""
        self._taken = old._taken
        self._tokens = min(self._capacity, old._tokens)
        self._refilled_at = old._refilled_at


class DriftState:
    """Whether this device's scene has changed: its own windows against its model card
    (:func:`drift_sign`), or an alert the controller pushed. Times from the caller."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.until = float("-inf")
        self.reason: str | None = None

    def sign(self, now: float, reason: str, hold_s: float | None = None) -> None:
        self.until = max(self.until, now + (self.hold_s if hold_s is None else hold_s))
        self.reason = reason

    def drifting(self, now: float) -> bool:
        return now < self.until


def drift_sign(
    cfg: DriftSamplingConfig,
    *,
    frames: int,
    psi: float | None,
    dpf: float,
    card_dpf: float | None,
) -> str | None:
    """Why a window says the scene changed, or None (also when it has too few frames)."""
    if frames < cfg.min_frames:
        return None
    if psi is not None and psi >= cfg.psi_above:
        return f"psi {psi:.2f}"
    if card_dpf and dpf < cfg.dpf_ratio_below * card_dpf:
        return f"detections/frame {dpf:.2f} vs {card_dpf:.2f}"
    return None


@dataclass(frozen=True)
class Choice:
    strategy: str
    reason: str
    drifting: bool = False  # charged to the released reserve
    burst: bool = False  # charged to the drift burst, past the strategy's limits


def match(
    s: StrategyConfig, dets: Sequence[Detection], cands: Sequence[Detection], rng: random.Random
) -> str | None:
    """Why strategy ``s`` wants this frame, or None."""
    if s.kind == "near_threshold":
        low, high = s.band
        hits = [d.confidence for d in (*dets, *cands) if low <= d.confidence < high]
        return f"{len(hits)} score(s) in [{low}, {high})" if hits else None
    if s.kind == "random":
        return f"random {s.share:.2%}" if rng.random() < s.share else None
    if s.kind == "class":
        seen = sorted({d.class_name for d in dets if d.class_name in s.classes})
        return f"class {','.join(seen)}" if seen else None
    n = len(dets)
    if (s.min_detections is None or n >= s.min_detections) and (
        s.max_detections is None or n <= s.max_detections
    ):
        return f"{n} detection(s)"
    return None


class SamplingPolicy:
    """Which strategy takes a frame. While ``drifting``, near_threshold strategies go first
    and may use their reserve, then a burst of ``burst_per_hour`` frames past their limits
    (spaced ``burst_spacing_s`` apart; the byte budget still holds)."""

    def __init__(
        self,
        strategies: Sequence[StrategyConfig],
        rng: random.Random,
        *,
        pace: bool = False,
        drift: DriftSamplingConfig | None = None,
    ) -> None:
        self.strategies = list(strategies)
        self.drift = drift or DriftSamplingConfig(reserve=0.0, burst_per_hour=0)
        self.budgets = {s.name: Budget(s, reserve=self.drift.reserve, pace=pace)
                        for s in strategies}  # fmt: skip
        self.rng = rng
        self.bursts: deque[float] = deque()  # times of burst captures, last hour

    def _order(self, drifting: bool) -> list[StrategyConfig]:
        if not drifting:
            return self.strategies
        return sorted(self.strategies, key=lambda s: s.kind != "near_threshold")  # stable

    def choose(
        self,
        dets: Sequence[Detection],
        cands: Sequence[Detection],
        now: float,
        *,
        drifting: bool = False,
    ) -> Choice | None:
        """The first strategy that wants the frame and still has a frame in its budget."""
        for s in self._order(drifting):
            reason = match(s, dets, cands, self.rng)
            if reason is None:
                continue
            if self.budgets[s.name].allows(now, drifting=drifting):
                return Choice(s.name, reason, drifting=drifting)
            if drifting and s.kind == "near_threshold" and self._burst_allows(now):
                return Choice(s.name, f"{reason}; drift burst", drifting=True, burst=True)
        return None

    def _burst_allows(self, now: float) -> bool:
        while self.bursts and self.bursts[0] <= now - HOUR:
            self.bursts.popleft()
        if len(self.bursts) >= self.drift.burst_per_hour:
            return False
        return not self.bursts or now - self.bursts[-1] >= self.drift.burst_spacing_s

    def commit(self, choice: Choice, now: float, nbytes: int) -> bool:
        """Charge the JPEG's bytes; False (and nothing charged) when over the byte budget."""
        budget = self.budgets[choice.strategy]
        if choice.burst:
            if not budget.take_burst(now, nbytes):
                return False
            self.bursts.append(now)
            return True
        if not budget.allows(now, nbytes, drifting=choice.drifting):
            return False
        budget.take(now, nbytes, drifting=choice.drifting)
        return True


# --- the shell ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    frame: npt.NDArray[np.uint8]
    choice: Choice
    at: float  # monotonic seconds
    captured_at: datetime
    model: str | None
    version: str | None
    detections: list[Detection]
    candidates: list[Detection]


class Sampler:
    """Frame-loop sink (cheap: decide and enqueue) plus one thread to encode and upload."""

    def __init__(
        self,
        device_id: str,
        config: SamplingConfig,
        spool: DiskSpool,
        http: ControllerHttp | None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        upload_token: str | None = None,  # the device's credential from enrollment
        settings: Callable[[], SamplingConfig | None] | None = None,  # the controller's
        refresh_s: float = 30.0,  # seconds between asking ``settings``, MQTT link down
        refresh_connected_s: float | None = None,  # ... link up (None: refresh_s)
        link_up: Callable[[], bool] = lambda: False,  # the MQTT link is connected
    ) -> None:
        self.device_id, self.config, self.spool, self.http = device_id, config, spool, http
        self.upload_token = upload_token
        self.settings, self.link_up = settings, link_up
        self.schedule = RefreshSchedule(refresh_s, refresh_connected_s or refresh_s)
        self.policy = _policy(config, rng or random.Random())
        self.drift = DriftState(config.drift.hold_s)
        self.clock = clock
        self.captured = self.uploaded = self.over_budget = self.queue_full = 0
        self._queue: queue.Queue[Pending] = queue.Queue(maxsize=config.queue_size)
        self._lock = threading.Lock()

    def reconfigure(self, config: SamplingConfig) -> bool:
        """Apply new settings at once; a strategy that keeps its name keeps what it took."""
        if config == self.config:
            return False
        with self._lock:
            old = self.policy
            policy = _policy(config, old.rng)
            for name, budget in policy.budgets.items():
                if name in old.budgets:
                    budget.carry(old.budgets[name])
            policy.bursts = old.bursts
            self.policy, self.config = policy, config
            self.drift.hold_s = config.drift.hold_s
        log.info("sampling settings changed: %s", [st.name for st in policy.strategies])
        return True

    def refresh(self) -> bool:
        """Ask for the effective settings; keep the current ones when there is no answer."""
        if self.settings is None:
            return False
        config = self.settings()
        return config is not None and self.reconfigure(config)

    def settings_announced(self) -> None:
        """The controller announced new settings, or the MQTT link came back: ask soon
        (the sampler thread asks within half a second). Safe from paho's thread."""
        self.schedule.announce()

    def _refresh_when_due(self) -> None:
        if self.settings is None or not self.schedule.take(self.clock(), self.link_up()):
            return
        asked_at = self.clock()
        self.refresh()
        # ControllerSettings says whether it got an answer (a 304 is one); a plain callable
        # that returned nothing is taken as answered
        self.schedule.done(asked_at, getattr(self.settings, "answered", True))

    # -- FrameSink --------------------------------------------------------------------

    def on_frame(self, result: FrameResult) -> None:
        frame = getattr(result, "frame", None)
        if frame is None or result.error:
            return
        # The decoder may go lower than this sampler's floor (the telemetry window's
        # measurement needs candidates down to MEASURE_CONF): below the floor is noise.
        floor = self.config.candidate_floor
        cands = [c for c in getattr(result, "candidates", None) or [] if c.confidence > floor]
        now = self.clock()
        with self._lock:
            drifting = self.drift.drifting(now)
            choice = self.policy.choose(result.detections, cands, now, drifting=drifting)
        if choice is None:
            return
        item = Pending(frame, choice, now, utcnow(), result.meta.model, result.meta.version,
                       list(result.detections), cands)  # fmt: skip
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.queue_full += 1

    def on_drop(self, n: int) -> None:
        pass

    # -- drift ------------------------------------------------------------------------

    def drift_alert(self, hold_s: float | None = None) -> None:
        """The controller pushed a drift alert for a scope holding this device."""
        with self._lock:
            self.drift.sign(self.clock(), "drift alert from the controller", hold_s)
        log.info("drift alert from the controller: drift budget open")

    def note_window(self, window: TelemetryWindow, card_dpf: float | None) -> str | None:
        """A telemetry window scored against its card (``with_drift``): a sign of drift
        starts or extends the drift budget. Returns the sign, if any."""
        sign = drift_sign(self.config.drift, frames=window.frames, psi=window.drift_psi,
                          dpf=window.detections_per_frame, card_dpf=card_dpf)  # fmt: skip
        if sign is not None:
            with self._lock:
                was = self.drift.drifting(self.clock())
                self.drift.sign(self.clock(), sign)
            if not was:
                log.info("scene drifting (%s): uncertain frames first, drift budget open", sign)
        return sign

    # -- background -------------------------------------------------------------------

    def capture(self, item: Pending) -> Entry | None:
        import cv2

        ok, buf = cv2.imencode(".jpg", item.frame, [cv2.IMWRITE_JPEG_QUALITY,
                                                    self.config.jpeg_quality])  # fmt: skip
        if not ok:
            return None
        jpeg = buf.tobytes()
        with self._lock:
            if not self.policy.commit(item.choice, item.at, len(jpeg)):
                self.over_budget += 1
                return None
        entry = self.spool.put(self._sidecar(item), {"jpg": jpeg})
        self.captured += 1
        return entry

    def _sidecar(self, item: Pending) -> bytes:
        h, w = item.frame.shape[:2]
        meta = {
            "uid": uuid.uuid4().hex, "device_id": self.device_id, "model": item.model,
            "version": item.version, "strategy": item.choice.strategy,
            "reason": item.choice.reason, "captured_at": item.captured_at.isoformat(),
            "width": int(w), "height": int(h),
            "detections": [d.to_json() for d in item.detections],
            "candidates": [d.to_json() for d in item.candidates[:200]],
        }  # fmt: skip
        return json.dumps(meta).encode()

    def upload(self) -> int:
        """Send the spool oldest first; stop at the first failure (the next round retries)."""
        if self.http is None:
            return 0
        sent = 0
        for entry in self.spool.entries():
            try:
                meta, jpeg = entry.path().read_bytes(), entry.path("jpg").read_bytes()
            except FileNotFoundError:
                self.spool.remove(entry)  # half an entry: cannot ever be sent
                continue
            fields = {"meta": meta.decode(), "image": (f"{entry.name}.jpg", jpeg, "image/jpeg")}
            try:
                answer = self.http.request("POST", "/v1/samples", fields=fields,
                                           headers=self._auth())  # fmt: skip
            except TransportError as e:
                log.info("sample upload deferred: %s", e.reason)
                break
            if answer.status in (200, 201):
                self.spool.remove(entry)
                sent += 1
            elif 400 <= answer.status < 500 and answer.status not in (408, 429):
                log.warning("controller refused sample %s (HTTP %d): dropped", entry.name,
                            answer.status)  # fmt: skip
                self.spool.remove(entry)
            else:
                break
        self.uploaded += sent
        return sent

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.upload_token}"} if self.upload_token else {}

    def run(self, stop: threading.Event) -> None:
        next_upload = 0.0
        while not stop.is_set():
            self._refresh_when_due()
            try:
                self.capture(self._queue.get(timeout=0.5))
            except queue.Empty:
                pass
            except OSError as e:
                log.warning("cannot spool a sample: %s", e)
            if self.clock() >= next_upload:
                next_upload = self.clock() + self.config.upload_interval_s
                try:
                    self.upload()
                except OSError as e:
                    log.warning("sample spool unreadable: %s", e)


def _policy(config: SamplingConfig, rng: random.Random) -> SamplingPolicy:
    strategies = config.strategies if config.enabled else []
    return SamplingPolicy(strategies, rng, pace=config.pace, drift=config.drift)


# Bound at start from the local config: the controller's settings do not change these.
LOCAL_ONLY = (
    "candidate_floor",
    "spool_max_items",
    "spool_max_bytes",
    "queue_size",
    "settings_refresh_s",
    "settings_refresh_connected_s",
)


def controller_settings(
    http: ControllerHttp, device_id: str, labels: dict[str, str], local: SamplingConfig
) -> SamplingConfig | None:
    """One unconditional ask; see :class:`ControllerSettings`."""
    return ControllerSettings(http, device_id, labels, local)()


class ControllerSettings:
    """The effective settings from ``GET /v1/devices/{id}/sampling``: the controller's for
    the first selector the device's labels match, else ``local``; None when there is
    nothing new (304: unchanged since the last answer) or no usable answer (controller
    down, refused, malformed): the caller keeps what it has.

    The last answer's ETag goes back in ``If-None-Match``, so an unchanged rule costs a
    bodiless 304. The ETag is kept only for an answer that was applied.
    """

    def __init__(
        self, http: ControllerHttp, device_id: str, labels: dict[str, str], local: SamplingConfig
    ) -> None:
        self.http, self.local = http, local
        query = "&".join(f"label={quote(f'{k}={v}', safe='')}" for k, v in sorted(labels.items()))
        self.path = f"/v1/devices/{quote(device_id)}/sampling?{query}"
        self.etag: str | None = None
        self.answered = False  # the last ask got a usable answer (a 304 is one)

    def __call__(self) -> SamplingConfig | None:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        self.answered = False
        try:
            answer = self.http.request("GET", self.path, headers=headers)
        except TransportError as e:
            log.info("sampling settings not fetched: %s", e.reason)
            return None
        if answer.status == 304:
            self.answered = True
            return None
        if answer.status != 200:
            log.info("sampling settings not fetched: HTTP %d", answer.status)
            return None
        config = self._parse(answer.body)
        self.answered = config is not None
        self.etag = answer.headers.get("etag") if config is not None else None
        return config

    def _parse(self, body: bytes) -> SamplingConfig | None:
        try:
            remote = json.loads(body).get("sampling")
            if remote is None:
                return self.local
            keep = {k: getattr(self.local, k) for k in LOCAL_ONLY}
            return SamplingConfig.model_validate({**remote, **keep})
        except (ValueError, AttributeError, TypeError) as e:  # ValidationError: a ValueError
            log.warning("sampling settings from the controller refused: %s",
                        str(e).splitlines()[0])  # fmt: skip
            return None
