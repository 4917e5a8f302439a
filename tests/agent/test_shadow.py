"""Shadow phase: agreement math (pure) and real models compared on live pipeline frames."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from edgefleet.agent.pipeline import FolderSource, Pipeline
from edgefleet.agent.shadow import ShadowTap, agreement, run_shadow
from edgefleet.agent.slots import ModelSlots
from edgefleet.agent.store import ModelPointer

from edgefleet.runtime.backend import Detection
from edgefleet.runtime.detector import Detector

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "models" / "shapes"


def det(cls: int, box: tuple[float, float, float, float], conf: float = 0.9) -> Detection:
    return Detection(cls, str(cls), conf, box)


def test_identical_outputs_agree_fully():
    frame = [det(0, (0, 0, 10, 10)), det(1, (20, 20, 40, 40))]
    a = agreement([(frame, list(frame))])
    assert (a.match_rate, a.mean_iou, a.class_agreement) == (1.0, 1.0, 1.0)


def test_one_box_under_several_classes_pairs_by_class():
    # Per-class NMS keeps one box under three classes: identical outputs of two models must
    # agree fully (this read 33 % when the pairing took any box of IoU 1.0, whatever its class).
    box = (0.0, 0.0, 10.0, 10.0)
    champ = [det(0, box, 0.9), det(1, box, 0.8), det(2, box, 0.7)]
    a = agreement([(champ, list(champ))])
    assert (a.matched, a.class_agreement) == (3, 1.0)


def test_shifted_box_other_class_and_a_missing_box():
    champ = [det(0, (0, 0, 10, 10)), det(1, (20, 20, 40, 40), 0.8)]
    chall = [det(2, (0, 0, 10, 12))]  # IoU 10/12 with the first, other class; second missed
    a = agreement([(champ, chall)])
    assert a.matched == 1
    assert a.match_rate == 0.5
    assert a.mean_iou == pytest.approx(10 / 12)
    assert a.class_agreement == 0.0
    assert "50% of boxes matched" in a.summary()


def test_two_classes_on_one_box_pair_with_their_own_class():
    # What shapes v1 outputs on sample2: one box, cross 0.45 and star 0.31.
    frame = [det(4, (90, 67, 248, 230), 0.445), det(3, (90, 67, 248, 230), 0.315)]
    a = agreement([(frame, list(frame))])
    assert (a.matched, a.match_rate, a.class_agreement) == (2, 1.0, 1.0)
    other = agreement([([det(4, (0, 0, 10, 10))], [det(3, (0, 0, 10, 10))])])
    assert (other.match_rate, other.class_agreement) == (1.0, 0.0)  # matched, other class


def test_low_iou_is_not_a_match_and_empty_frames_agree():
    a = agreement([([det(0, (0, 0, 10, 10))], [det(0, (8, 8, 20, 20))])])
    assert a.matched == 0
    assert a.match_rate == 0.0
    assert agreement([([], [])]).match_rate == 1.0


def _live(champion: Path, challenger: Path):
    slots, tap = ModelSlots(), ShadowTap()
    slots.stage(Detector.from_onnx(champion), ModelPointer("shapes", "c", 1, "0" * 64, "c"))
    slots.swap()
    slots.commit()
    pipeline = Pipeline(FolderSource(REPO / "models" / "samples"), slots, [tap], fps=0)
    challenger_det = Detector.from_onnx(challenger)
    pipeline.start()
    try:
        result = run_shadow(
            tap, challenger_det.detect, frames=7, timeout=60, stop=threading.Event()
        )
    finally:
        pipeline.stop()
        slots.close()
        challenger_det.close()
    assert result.frames == 7
    return result


def _agreement_on_live_frames(champion: Path, challenger: Path) -> float:
    return _live(champion, challenger).match_rate


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_champions_own_weights_in_new_bytes_agree_fully(tmp_path, version):
    import onnx

    champion = SHAPES / version / "model.onnx"
    model = onnx.load(str(champion))
    model.doc_string = "re-exported: same weights, other bytes"
    challenger = tmp_path / "same-weights.onnx"
    onnx.save(model, str(challenger))
    assert challenger.read_bytes() != champion.read_bytes()
    result = _live(champion, challenger)
    assert result.champion > 0  # the samples give both models something to find
    assert (result.match_rate, result.mean_iou, result.class_agreement) == (1.0, 1.0, 1.0)
    assert "100% of boxes matched" in result.summary()
    assert "class agreement 100%" in result.summary()


def test_live_shadow_tells_a_retrained_model_from_a_broken_one():
    same = _agreement_on_live_frames(SHAPES / "v2/model.onnx", SHAPES / "v2/model.onnx")
    bad = _agreement_on_live_frames(SHAPES / "v2/model.onnx", SHAPES / "bad/model.onnx")
    assert same == 1.0
    assert bad < same


def _reconciler(tmp_path: Path, min_match_rate: float | None, *, configured: bool = True):
    from edgefleet.agent.reconcile import HealthCheck, Identity, Reconciler, ShadowSettings
    from edgefleet.agent.store import DeviceStore
    from edgefleet.shared.protocol import Fingerprint

    from tests.agent.test_reconcile import FakeUpdater, Recorder

    updater, reporter = FakeUpdater(), Recorder()
    store = DeviceStore(tmp_path / "data")
    store.load()
    slots, tap = ModelSlots(), ShadowTap()
    health = HealthCheck(frames=3, budget_ms=5000)
    pipeline = Pipeline(FolderSource(REPO / "models" / "samples"), slots, [health, tap], fps=0)
    stop = threading.Event()
    rec = Reconciler(
        Identity("cam-1", {}, Fingerprint(arch="x86_64"), "0.1.0"),
        updater=updater, store=store, slots=slots, health=health, reporter=reporter,
        loader=Detector.from_onnx, stop=stop, health_timeout_s=30,
        shadow=ShadowSettings(tap, frames=5, timeout_s=30, min_match_rate=min_match_rate)
        if configured else None, shadow_tap=tap,
    )  # fmt: skip
    return updater, reporter, slots, pipeline, rec, stop


@pytest.mark.parametrize(("challenger", "gate", "final"), [
    ("v2", None, "COMMITTED"),  # report only
    ("bad", 0.99, "FAILED"),  # a gate the broken model does not pass
])  # fmt: skip
def test_reconciler_reports_shadow_agreement_before_the_swap(tmp_path, challenger, gate, final):
    from edgefleet.shared.protocol import Phase, PhaseEvent

    updater, reporter, slots, pipeline, rec, stop = _reconciler(tmp_path, gate)
    pipeline.start()
    try:
        updater.assign("v1", (SHAPES / "v2/model.onnx").read_bytes(), release=1)
        assert rec.install(updater.targets[0]) is Phase.COMMITTED  # first install: no shadow
        assert Phase.SHADOW not in reporter.phases()
        updater.assign("v2", (SHAPES / challenger / "model.onnx").read_bytes(), release=2)
        assert rec.install(updater.targets[0]).value == final
        serving = slots.active.meta.version if slots.active else None
    finally:
        stop.set()
        pipeline.stop()
        slots.close()
    shadow = [e for e in reporter.events if isinstance(e, PhaseEvent) and e.phase is Phase.SHADOW]
    assert shadow[-1].reason is not None
    assert "boxes matched" in shadow[-1].reason
    phases = reporter.phases()
    assert phases.index(Phase.SHADOW, 4) < len(phases) - 1
    if final == "COMMITTED":
        assert phases[-4:] == [Phase.SHADOW, Phase.SWAPPED, Phase.HEALTH_CHECK, Phase.COMMITTED]
        assert rec.last_agreement is not None
        assert rec.last_agreement.match_rate == 1.0
    else:
        assert Phase.SWAPPED not in phases[phases.index(Phase.SHADOW, 4) :]  # never served
        assert serving == "v1"


@pytest.mark.parametrize(("asked", "final"), [
    (None, "COMMITTED"),  # no agent config, no request: no shadow phase
    ({"frames": 5, "timeout_s": 30, "min_match_permille": None}, "COMMITTED"),  # report only
    ({"frames": 5, "timeout_s": 30, "min_match_permille": 990}, "FAILED"),  # the stage's gate
])  # fmt: skip
def test_a_rollout_stage_asks_for_a_shadow_phase_through_its_target(tmp_path, asked, final):
    from dataclasses import asdict, dataclass

    from edgefleet.shared.protocol import Phase

    from tests.agent.test_reconcile import Target

    @dataclass(frozen=True)
    class StageTarget(Target):
        shadow: dict | None = None  # what the director's custom carries (install_policy)

    updater, reporter, slots, pipeline, rec, stop = _reconciler(tmp_path, None, configured=False)
    pipeline.start()
    try:
        updater.assign("v1", (SHAPES / "v2/model.onnx").read_bytes(), release=1)
        assert rec.install(updater.targets[0]) is Phase.COMMITTED
        updater.assign("v2", (SHAPES / "bad/model.onnx").read_bytes(), release=2)
        target = StageTarget(**asdict(updater.targets[0]), shadow=asked)
        assert rec.install(target).value == final
    finally:
        stop.set()
        pipeline.stop()
        slots.close()
    assert (Phase.SHADOW in reporter.phases()) == (asked is not None)
