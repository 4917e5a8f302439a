"""The health check's collapse rule on frame results (pure)."""

from __future__ import annotations

import threading

from edgefleet.agent.candidates import RawSummary
from edgefleet.agent.pipeline import FrameResult
from edgefleet.agent.reconcile import HealthCheck, collapse_problem, judge
from edgefleet.agent.store import ModelPointer

from edgefleet.runtime.backend import Detection

META = ModelPointer(model="m", version="v2", release=2, sha256="0" * 64, file="m.onnx")


def result(n: int, slot: int = 2, score: float = 0.9) -> FrameResult:
    dets = [Detection(0, "thing", 0.9, (1.0, 1.0, 5.0, 5.0)) for _ in range(n)]
    return FrameResult(slot, META, 5.0, dets, raw=RawSummary(0, score))


def test_detections_collapsing_against_the_previous_model_fail() -> None:
    before = [2] * 30  # the old model: 2 per frame on the recent frames
    verdict = judge([result(0) for _ in range(5)], 1000.0, before)
    assert not verdict.ok and verdict.reason and "collapsed" in verdict.reason
    assert judge([result(2) for _ in range(5)], 1000.0, before).ok
    assert judge([result(1) for _ in range(5)], 1000.0, before).ok  # half: not a collapse


def test_collapse_needs_evidence_from_the_old_model() -> None:
    assert collapse_problem([result(0) for _ in range(5)], [1] * 10) is None  # 10 < 20 seen
    assert collapse_problem([result(0) for _ in range(2)], [2] * 30) is None  # 4 < 8 expected
    assert collapse_problem([result(0) for _ in range(5)], []) is None  # a first install


def test_all_zero_scores_and_non_finite_raw_outputs_fail() -> None:
    zero = [result(0, score=0.0) for _ in range(3)]
    assert "all zero" in (judge(zero, 1000.0).reason or "")
    nan = FrameResult(2, META, 5.0, [], raw=RawSummary(12, float("nan")))
    assert "non-finite" in (judge([nan], 1000.0).reason or "")


def test_the_sink_remembers_the_old_model_and_judges_the_new_one() -> None:
    check = HealthCheck(frames=5, budget_ms=1000.0)
    for _ in range(30):
        check.on_frame(result(3, slot=1))
    check.arm(2)
    for _ in range(5):
        check.on_frame(result(0, slot=2))
    verdict = check.wait(1.0, threading.Event())
    assert not verdict.ok and "collapsed" in (verdict.reason or "")


def test_a_weaker_model_on_a_quiet_start_is_watched_longer_not_refused() -> None:
    """The old model found 2 per frame; the new one finds a fifth of that, none of it in the
    first 5 frames (a quiet stretch of the scene). The check watches until the old rate
    predicts 30 detections (15 frames) and passes; a dead head fails after the same."""
    check = HealthCheck(frames=5, budget_ms=1000.0)
    for _ in range(30):
        check.on_frame(result(2, slot=1))
    check.arm(2)
    stream = [0] * 5 + [0, 0, 1, 0, 1, 0, 0, 1, 0, 1]  # 4 in 15: a fifth of 30 expected
    for n in stream:
        check.on_frame(result(n, slot=2))
    assert check.wait(5.0, threading.Event()).ok

    check.arm(3)
    for _ in range(15):
        check.on_frame(result(0, slot=3))
    verdict = check.wait(5.0, threading.Event())
    assert not verdict.ok and "collapsed" in (verdict.reason or "")
