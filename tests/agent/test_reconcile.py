"""The install state machine with real ONNX models, real frames and a fake updater.

The fake implements the updater's two-method seam (refresh, download); everything else is
real: the durable store, the slots, the pipeline on sample images, onnxruntime.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from edgefleet.agent.candidates import NO_CANDIDATES, with_candidates
from edgefleet.agent.hooks import NoHooks
from edgefleet.agent.install_lifecycle import IllegalPhaseError
from edgefleet.agent.pipeline import FolderSource, FrameResult, Pipeline
from edgefleet.agent.reconcile import HealthCheck, Identity, Reconciler
from edgefleet.agent.slots import DetectorLike, ModelSlots
from edgefleet.agent.store import DeviceStore
from edgefleet.shared.errors import TransportError, TrustError
from edgefleet.shared.hashing import sha256_bytes
from edgefleet.shared.protocol import (
    DeviceState,
    Fingerprint,
    Phase,
    PhaseEvent,
    RejectedEvent,
)
from onnx import TensorProto, helper

from edgefleet.runtime.detector import Detector

DEVICE = "cam-1"
MODELS = Path(__file__).resolve().parents[2] / "models"
REAL_V1 = MODELS / "shapes" / "v1" / "model.onnx"
REAL_V2 = MODELS / "shapes" / "v2" / "model.onnx"


def tiny_model(box: tuple[float, float, float, float] = (2, 2, 20, 20), conf: float = 0.9) -> bytes:
    """A loadable end-to-end detector (1, 300, 6) that always finds one 'thing'."""
    out = np.zeros((1, 300, 6), dtype=np.float32)
    out[0, 0] = [*box, conf, 0]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["images"], ["s"], keepdims=0),
            helper.make_node("Mul", ["s", "zero"], ["z"]),
            helper.make_node("Add", ["c", "z"], ["output0"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 300, 6])],
        [
            helper.make_tensor("c", TensorProto.FLOAT, out.shape, out.flatten().tolist()),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"names": "{0: 'thing'}", "imgsz": "[32, 32]", "task": "detect"})
    return bytes(model.SerializeToString())


@dataclass(frozen=True)
class Target:
    target_path: str
    model: str
    version: str
    release: int
    length: int
    sha256: str
    format: str = "onnx"


class FakeUpdater:
    """The updater seam: serves one assigned target; can fail like the real one."""

    def __init__(self) -> None:
        self.targets: list[Target] = []
        self.blobs: dict[str, bytes] = {}  # sha256 -> bytes the "controller" serves
        self.refresh_error: Exception | None = None
        self.download_error: Exception | None = None
        self.refreshes = 0
        self.downloads = 0

    def assign(
        self, version: str, data: bytes, *, release: int, served: bytes | None = None
    ) -> Target:
        sha = sha256_bytes(data)
        t = Target(
            f"models/shapes/{version}/model.onnx", "shapes", version, release, len(data), sha
        )
        self.targets = [t]
        self.blobs[sha] = data if served is None else served
        return t

    def refresh(
        self, installed_releases: Mapping[str, int], fingerprint: Fingerprint | None
    ) -> list[Target]:
        self.refreshes += 1
        if self.refresh_error:
            raise self.refresh_error
        return list(self.targets)

    def download(self, target: Target, dest_dir: Path) -> Path:
        self.downloads += 1
        if self.download_error:
            raise self.download_error
        data = self.blobs[target.sha256]
        if sha256_bytes(data) != target.sha256:  # what TUF's length/hash check does
            raise TrustError(f"{target.target_path}: hash mismatch")
        dest = dest_dir / f"{target.sha256}.onnx"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return dest


class Recorder:
    """The reporter seam (MqttLink in production)."""

    def __init__(self) -> None:
        self.states: list[DeviceState] = []
        self.events: list[PhaseEvent | RejectedEvent] = []

    def publish_state(self, state: DeviceState) -> None:
        self.states.append(state)

    def publish_event(self, event: PhaseEvent | RejectedEvent) -> None:
        self.events.append(event)

    def phases(self) -> list[Phase]:
        return [e.phase for e in self.events if isinstance(e, PhaseEvent)]

    def rejected(self) -> list[RejectedEvent]:
        return [e for e in self.events if isinstance(e, RejectedEvent)]


def load(path: Path) -> DetectorLike:
    # As the daemon loads: one decode gives detections and the raw output's summary.
    return with_candidates(Detector.from_onnx, NO_CANDIDATES)(path)  # type: ignore[no-any-return]


class Seen:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_frame(self, result: FrameResult) -> None:
        self.seen.append(result.meta.version)

    def on_drop(self, n: int) -> None:
        pass


@dataclass
class Rig:
    updater: FakeUpdater
    reporter: Recorder
    store: DeviceStore
    slots: ModelSlots
    pipeline: Pipeline
    rec: Reconciler
    stop: threading.Event
    seen: Seen

    def serving(self) -> str | None:
        slot = self.slots.active
        return slot.meta.version if slot else None

    def frames_on(self, version: str, after: int = 0) -> int:
        return sum(1 for r in self.seen.seen[after:] if r == version)


@pytest.fixture
def rig(tmp_path: Path, repo_root: Path) -> Iterator[Rig]:
    updater, reporter = FakeUpdater(), Recorder()
    store = DeviceStore(tmp_path / "data")
    store.load()
    slots = ModelSlots()
    health = HealthCheck(frames=3, budget_ms=5000)
    source = FolderSource(repo_root / "models" / "samples")
    seen = Seen()
    pipeline = Pipeline(source, slots, [health, seen], fps=0)
    stop = threading.Event()
    identity = Identity(DEVICE, {"site": "s1"}, Fingerprint(arch="x86_64"), "0.1.0")
    rec = Reconciler(
        identity,
        updater=updater,
        store=store,
        slots=slots,
        health=health,
        reporter=reporter,
        loader=load,
        stop=stop,
        health_timeout_s=20,
    )
    pipeline.start()
    try:
        yield Rig(updater, reporter, store, slots, pipeline, rec, stop, seen)
    finally:
        stop.set()
        pipeline.stop()
        slots.close()


HAPPY = [
    Phase.DOWNLOADING,
    Phase.VERIFIED,
    Phase.PREPARING,
    Phase.WARMING,
    Phase.SWAPPED,
    Phase.HEALTH_CHECK,
    Phase.COMMITTED,
]


def committed_version(rig: Rig) -> str | None:
    current = DeviceStore(rig.store.data_dir).load().current
    return current.version if current else None


def install_v1(rig: Rig) -> None:
    rig.updater.assign("v1", tiny_model(), release=1)
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.COMMITTED, rig.reporter.events


def test_first_model_commits_and_state_tells_the_truth(rig: Rig) -> None:
    install_v1(rig)
    assert rig.reporter.phases() == HAPPY
    assert rig.serving() == "v1"
    state = rig.reporter.states[-1]
    assert (state.model, state.version, state.phase, state.error) == (
        "shapes",
        "v1",
        Phase.COMMITTED,
        None,
    )
    assert state.labels == {"site": "s1"} and state.fingerprint is not None
    # durable: a restarted agent comes back on v1
    again = DeviceStore(rig.store.data_dir).load()
    assert again.current is not None and again.current.version == "v1"
    assert again.installed == {"shapes": 1}


def test_already_current_target_does_nothing(rig: Rig) -> None:
    install_v1(rig)
    n_events, n_downloads = len(rig.reporter.events), rig.updater.downloads
    rig.rec.reconcile_once()
    assert len(rig.reporter.events) == n_events and rig.updater.downloads == n_downloads


def test_the_same_bytes_under_a_new_name_are_reported_without_a_reinstall(rig: Rig) -> None:
    install_v1(rig)
    n_downloads, frames = rig.updater.downloads, len(rig.seen.seen)
    rig.updater.assign("v1-rb3", tiny_model(), release=3)  # re-signed: same bytes
    rig.rec.reconcile_once()
    assert rig.updater.downloads == n_downloads  # no download, no swap
    assert rig.reporter.phases() == [*HAPPY, Phase.COMMITTED]
    state = rig.reporter.states[-1]
    assert (state.version, state.phase) == ("v1-rb3", Phase.COMMITTED)
    assert rig.serving() == "v1-rb3"
    assert _wait(lambda: rig.frames_on("v1-rb3", frames) > 0)  # frames go by the new name
    again = DeviceStore(rig.store.data_dir).load()
    assert again.current is not None and again.current.version == "v1-rb3"
    assert again.installed == {"shapes": 3}  # the agent now refuses releases below 3
    rig.rec.reconcile_once()  # settled: nothing more to report
    assert rig.reporter.phases() == [*HAPPY, Phase.COMMITTED]


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_update_swaps_between_frames_and_commits(rig: Rig) -> None:
    install_v1(rig)
    rig.updater.assign("v2", tiny_model(box=(4, 4, 28, 28), conf=0.8), release=2)
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.COMMITTED
    assert rig.serving() == "v2"
    assert rig.reporter.phases() == HAPPY + HAPPY
    assert rig.pipeline.errors == 0
    state = DeviceStore(rig.store.data_dir).load()
    assert state.current is not None and state.previous is not None
    assert (state.current.version, state.previous.version) == ("v2", "v1")


def test_tampered_artifact_is_refused_and_old_model_keeps_serving(rig: Rig) -> None:
    install_v1(rig)
    good = tiny_model(conf=0.7)
    rig.updater.assign("v2", good, release=2, served=good[:-1] + b"\x00")

    rig.rec.reconcile_once()

    assert rig.rec.phase is Phase.FAILED
    assert rig.reporter.phases()[-2:] == [Phase.DOWNLOADING, Phase.FAILED]
    assert rig.reporter.rejected(), "a refused artifact is reported"
    assert rig.serving() == "v1"
    state = rig.reporter.states[-1]
    assert state.version == "v1" and state.error and "refused" in state.error
    before = len(rig.seen.seen)
    time.sleep(0.3)
    assert rig.frames_on("v1", after=before) > 0
    # the same artifact is not downloaded again on the next poll ...
    downloads = rig.updater.downloads
    rig.rec.reconcile_once()
    assert rig.updater.downloads == downloads


def test_model_that_does_not_load_fails_and_old_model_keeps_serving(rig: Rig) -> None:
    install_v1(rig)
    rig.updater.assign("v2", b"this is not an onnx file", release=2)
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.FAILED
    assert Phase.WARMING in rig.reporter.phases()[-3:]
    assert rig.serving() == "v1"
    assert rig.reporter.states[-1].error and "load" in rig.reporter.states[-1].error
    assert committed_version(rig) == "v1"


def test_model_with_insane_outputs_is_reverted(rig: Rig) -> None:
    install_v1(rig)
    nan = float("nan")
    rig.updater.assign("v2", tiny_model(box=(nan, nan, nan, nan)), release=2)

    rig.rec.reconcile_once()

    assert rig.rec.phase is Phase.REVERTED
    assert rig.reporter.phases()[-3:] == [Phase.SWAPPED, Phase.HEALTH_CHECK, Phase.REVERTED]
    assert rig.serving() == "v1"
    assert rig.pipeline.errors == 0
    state = rig.reporter.states[-1]
    assert (state.version, state.phase) == ("v1", Phase.REVERTED) and state.error
    assert committed_version(rig) == "v1"


def test_model_with_nan_scores_is_reverted_not_read_as_an_empty_scene(rig: Rig) -> None:
    """NaN confidences never pass the cut: the detections alone look like "nothing in
    view"; the raw output shows the model is broken."""
    install_v1(rig)
    rig.updater.assign("v2", tiny_model(conf=float("nan")), release=2)
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.REVERTED
    assert rig.serving() == "v1" and committed_version(rig) == "v1"
    error = rig.reporter.states[-1].error
    assert error and "non-finite" in error, error


def test_model_with_all_zero_scores_is_reverted(rig: Rig) -> None:
    install_v1(rig)
    rig.updater.assign("v2", tiny_model(conf=0.0), release=2)
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.REVERTED and rig.serving() == "v1"
    error = rig.reporter.states[-1].error
    assert error and "all zero" in error, error


def test_transport_errors_are_retried_quietly(rig: Rig) -> None:
    install_v1(rig)
    rig.updater.assign("v2", tiny_model(conf=0.6), release=2)
    rig.updater.refresh_error = TransportError("controller unreachable")
    rig.rec.reconcile_once()
    assert rig.reporter.rejected() == [] and rig.serving() == "v1"

    rig.updater.refresh_error = None
    rig.updater.download_error = TransportError("connection reset")
    rig.rec.reconcile_once()
    # transient: reported in the phase it hit, flagged, never FAILED, never a refusal
    assert rig.rec.phase is Phase.DOWNLOADING and rig.reporter.rejected() == []
    assert Phase.FAILED not in rig.reporter.phases()
    last = rig.reporter.events[-1]
    assert isinstance(last, PhaseEvent) and last.transient
    assert last.reason is not None and last.reason.startswith("download interrupted")
    state = rig.reporter.states[-1]
    assert state.transient and state.phase is Phase.DOWNLOADING and state.version == "v1"
    assert rig.serving() == "v1"

    rig.updater.download_error = None
    rig.rec.reconcile_once()  # retried, not refused
    assert rig.rec.phase is Phase.COMMITTED and rig.serving() == "v2"
    assert not rig.reporter.states[-1].transient and rig.reporter.states[-1].error is None
    assert rig.rec.backoff.delay_s is None  # a success resets the backoff


def test_transient_backoff_doubles_and_a_finished_fault_clears_the_report(rig: Rig) -> None:
    install_v1(rig)
    rig.updater.assign("v2", tiny_model(conf=0.6), release=2)
    rig.updater.download_error = TransportError("connection reset")
    ceilings = []
    for _ in range(4):
        rig.rec.reconcile_once()
        ceilings.append(rig.rec.backoff.delay_s)
    base = rig.rec.backoff.base_s
    for n, delay in enumerate(ceilings):
        assert delay is not None and base * 2**n / 2 <= delay <= base * 2**n
    # the controller takes the assignment back: nothing left to install, no stale report
    rig.updater.targets = rig.updater.targets[:0]
    rig.rec.reconcile_once()
    state = rig.reporter.states[-1]
    assert not state.transient and state.phase is Phase.COMMITTED and state.error is None


def test_a_refusal_after_a_transient_fault_is_reported_as_a_refusal(rig: Rig) -> None:
    install_v1(rig)
    rig.updater.assign("v2", tiny_model(conf=0.6), release=2)
    rig.updater.download_error = TransportError("connection reset")
    rig.rec.reconcile_once()
    assert rig.reporter.states[-1].transient
    rig.updater.refresh_error = TrustError("director targets signature invalid")
    rig.rec.reconcile_once()
    state = rig.reporter.states[-1]
    assert not state.transient and state.error == "director targets signature invalid"


def test_untrusted_metadata_is_reported_once_and_nothing_changes(rig: Rig) -> None:
    install_v1(rig)
    rig.updater.refresh_error = TrustError("director targets signature invalid")
    rig.rec.reconcile_once()
    rig.rec.reconcile_once()
    assert len(rig.reporter.rejected()) == 1
    assert rig.serving() == "v1"
    assert rig.reporter.states[-1].error == "director targets signature invalid"


def test_the_loop_survives_and_stops(rig: Rig) -> None:
    import queue

    from edgefleet.agent.mqtt_link import Hint

    rig.updater.refresh_error = RuntimeError("a bug in someone's code")
    hints: queue.Queue[Hint] = queue.Queue(maxsize=4)
    t = threading.Thread(target=rig.rec.run, args=(hints, 0.2))
    t.start()
    time.sleep(0.5)
    assert t.is_alive() and rig.updater.refreshes >= 2
    rig.updater.refresh_error = None
    rig.updater.assign("v1", tiny_model(), release=1)
    hints.put(Hint("command"))
    deadline = time.monotonic() + 20
    while rig.rec.phase is not Phase.COMMITTED and time.monotonic() < deadline:
        time.sleep(0.1)
    rig.stop.set()
    t.join(5)
    assert not t.is_alive()
    assert rig.serving() == "v1"


@pytest.mark.skipif(not REAL_V1.exists(), reason="trained models not built")
def test_real_shapes_model_commits(rig: Rig) -> None:
    install_v1(rig)
    rig.updater.assign("v1-real", REAL_V1.read_bytes(), release=2)
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.COMMITTED, rig.reporter.events[-1]
    assert rig.serving() == "v1-real"
    assert rig.pipeline.errors == 0


@pytest.mark.skipif(not (REAL_V1.exists() and REAL_V2.exists()), reason="trained models not built")
def test_real_shapes_models_update_v1_to_v2(rig: Rig) -> None:
    rig.updater.assign("v1", REAL_V1.read_bytes(), release=1)
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.COMMITTED and rig.serving() == "v1"
    rig.updater.assign("v2", REAL_V2.read_bytes(), release=2)
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.COMMITTED and rig.serving() == "v2"
    assert rig.pipeline.errors == 0


def test_a_refused_artifact_is_tried_again_after_its_backoff(rig: Rig) -> None:
    from edgefleet.agent.refusals import RETRY_MIN_S, RefusalBook

    now = [0.0]
    rig.rec.refused = RefusalBook(clock=lambda: now[0])
    install_v1(rig)
    good = tiny_model(conf=0.7)
    target = rig.updater.assign("v2", good, release=2, served=good[:-1] + b"\x00")
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.FAILED and rig.serving() == "v1"
    downloads = rig.updater.downloads
    rig.rec.reconcile_once()
    assert rig.updater.downloads == downloads  # not before the backoff
    rig.updater.blobs[target.sha256] = good  # the transient corruption is gone
    now[0] += RETRY_MIN_S
    rig.rec.reconcile_once()
    assert rig.updater.downloads == downloads + 1
    assert rig.rec.phase is Phase.COMMITTED and rig.serving() == "v2"
    assert target.sha256 not in rig.rec.refused


def test_a_full_disk_fails_the_install_and_the_next_poll_recovers(rig: Rig) -> None:
    import dataclasses

    install_v1(rig)
    target = rig.updater.assign("v2", tiny_model(conf=0.7), release=2)
    rig.updater.targets = [dataclasses.replace(target, length=10**18)]  # more than any disk
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.FAILED and rig.serving() == "v1"
    error = rig.reporter.states[-1].error or ""
    assert "not enough disk space" in error and "kept free" in error
    assert rig.reporter.rejected() == []  # not a refusal: nothing to back off from
    rig.updater.targets = [target]  # space is back
    rig.rec.reconcile_once()
    assert rig.rec.phase is Phase.COMMITTED and rig.serving() == "v2"


def _wait_until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_polls_slow_down_while_the_broker_is_up_and_nothing_is_pending(rig: Rig) -> None:
    import queue

    from edgefleet.agent.mqtt_link import Hint

    install_v1(rig)
    up = [True]
    hints: queue.Queue[Hint] = queue.Queue(maxsize=4)
    start = rig.updater.refreshes
    t = threading.Thread(target=rig.rec.run, args=(hints, 0.05),
                         kwargs={"connected_poll_s": 3600, "link_up": lambda: up[0]})  # fmt: skip
    t.start()
    try:
        assert _wait_until(lambda: rig.updater.refreshes > start)  # the pass at start
        time.sleep(1.0)  # twenty short intervals: no poll while the link is up
        assert rig.updater.refreshes == start + 1
        hints.put(Hint("desired", 2))  # a hint still wakes it at once
        assert _wait_until(lambda: rig.updater.refreshes == start + 2)
        up[0] = False  # broker gone: back to the short interval
        assert _wait_until(lambda: rig.updater.refreshes >= start + 5)
    finally:
        rig.stop.set()
        t.join(10)
    assert not t.is_alive()


def test_a_failed_install_is_retried_at_the_short_interval_while_connected(rig: Rig) -> None:
    import queue

    from edgefleet.agent.mqtt_link import Hint

    install_v1(rig)
    rig.updater.assign("v2", tiny_model(conf=0.7), release=2)
    rig.updater.download_error = TransportError("connection reset")  # transient
    hints: queue.Queue[Hint] = queue.Queue(maxsize=4)
    t = threading.Thread(target=rig.rec.run, args=(hints, 0.05),
                         kwargs={"connected_poll_s": 3600, "link_up": lambda: True})  # fmt: skip
    t.start()
    try:
        assert _wait_until(lambda: rig.rec.transient and rig.rec.phase is Phase.DOWNLOADING)
        rig.updater.download_error = None  # the controller is back
        assert _wait_until(lambda: rig.rec.phase is Phase.COMMITTED, timeout=60)
    finally:
        rig.stop.set()
        t.join(10)
    assert rig.serving() == "v2"


# -- the lifecycle table (agent/install_lifecycle.py) and the hooks seam -----------------


def test_the_reconciler_walks_only_table_steps_and_tells_the_hooks(rig: Rig) -> None:
    seen: list[Phase] = []

    class Recording(NoHooks):
        def on_phase(self, phase: Phase, stop: threading.Event) -> None:
            seen.append(phase)

    rig.rec.hooks = Recording()
    install_v1(rig)
    assert seen == HAPPY == rig.reporter.phases()


def test_an_illegal_step_in_the_reconciler_raises_and_reports_nothing(rig: Rig) -> None:
    install_v1(rig)
    rig.rec.phase = Phase.HEALTH_CHECK  # as if a bug had left an install half-way
    rig.updater.assign("v2", tiny_model(conf=0.8), release=2)
    published = len(rig.reporter.events), len(rig.reporter.states)
    with pytest.raises(IllegalPhaseError, match="cannot start in phase HEALTH_CHECK"):
        rig.rec.reconcile_once()
    assert (len(rig.reporter.events), len(rig.reporter.states)) == published
    assert rig.serving() == "v1" and rig.updater.downloads == 1
    rig.rec.run_once_safely()  # the loop logs it and lives on
    assert rig.serving() == "v1"
