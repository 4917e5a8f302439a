"""Canary gates over telemetry windows, canary against control (pure)."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from edgefleet.controller.rollouts.advance import Member, Next, Snapshot, plan
from edgefleet.controller.rollouts.gates import (
    Aggregate,
    Cards,
    Installs,
    Outcome,
    Stat,
    Verdict,
    card_gate,
    card_pair,
    crosses,
    evaluate,
    evaluate_gate,
    stage_outcome,
)
from edgefleet.controller.rollouts.spec import ML_GATES, Gate, Metric, RolloutSpec
from edgefleet.shared.histogram import (
    CONFIDENCE_EDGES,
    LATENCY_EDGES_MS,
    OLD_LATENCY_EDGES_MS,
    bin_counts,
)
from edgefleet.shared.protocol import TelemetryWindow

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
OK_INSTALLS = Installs(assigned=1, committed=1, failed=0)


def window(
    classes: dict[str, list[float]],
    latencies: list[float],
    *,
    at: int = 0,
    low: float = 0.5,
    edges: tuple[float, ...] = LATENCY_EDGES_MS,
) -> TelemetryWindow:
    confidences = [c for cs in classes.values() for c in cs]
    start = T0 + timedelta(seconds=10 * at)
    return TelemetryWindow(
        device_id="d", model="m", version="v", window_start=start,
        window_end=start + timedelta(seconds=10),
        frames=len(latencies), latency_edges_ms=list(edges),
        latency_counts=bin_counts(latencies, edges),
        confidence_edges=list(CONFIDENCE_EDGES),
        confidence_counts=bin_counts(confidences, CONFIDENCE_EDGES),
        per_class_confidence={k: bin_counts(v, CONFIDENCE_EDGES) for k, v in classes.items()},
        detections=len(confidences), low_confidence=sum(c < low for c in confidences),
    )  # fmt: skip


def group(
    mean_conf: float,
    latency_ms: float,
    seed: int,
    windows: int = 12,
    *,
    rate: float = 1.0,
    drop: str | None = None,
    edges: tuple[float, ...] = LATENCY_EDGES_MS,
) -> Aggregate:
    """``windows`` windows of 100 frames: person 1.0 and car 0.5 per frame (x ``rate``)."""
    rng = np.random.default_rng(seed)

    def confs(n_per_frame: float) -> list[float]:
        n = int(rng.poisson(n_per_frame * rate * 100))
        return list(np.clip(rng.normal(mean_conf, 0.08, n), 0.26, 1.0))

    return Aggregate.of(
        window(
            {k: ([] if k == drop else confs(r)) for k, r in (("person", 1.0), ("car", 0.5))},
            list(rng.lognormal(math.log(latency_ms), 0.1, 100)),
            at=i,
            edges=edges,
        )
        for i in range(windows)
    )


def by_metric(results: list) -> dict:  # type: ignore[type-arg]
    return {r.metric: r for r in results}


def test_a_good_canary_passes_every_ml_gate() -> None:
    res = by_metric(evaluate(ML_GATES, group(0.8, 10, 1), group(0.8, 10, 2), OK_INSTALLS))
    assert res.pop("card_map50_drop").verdict is Verdict.SKIPPED  # no cards here
    assert {r.verdict for r in res.values()} == {Verdict.PASS}, res
    assert res["mean_confidence_ratio"].value == pytest.approx(1.0, abs=0.05)
    assert res["detection_rate_ratio"].value == pytest.approx(1.0, abs=0.1)
    assert res["p95_latency_ratio"].samples == 1200
    assert res["psi"].kind == "descriptive" and res["errors"].kind == "hard"


def test_a_less_confident_canary_fails_the_confidence_gates() -> None:
    res = by_metric(evaluate(ML_GATES, group(0.5, 10, 1), group(0.8, 10, 2), OK_INSTALLS))
    for metric in ("mean_confidence_ratio", "class_confidence_ratio", "low_confidence_share"):
        assert res[metric].verdict is Verdict.FAIL, res[metric]
    assert res["psi"].verdict is Verdict.WARN  # shown, not a stop
    assert res["p95_latency_ratio"].verdict is Verdict.PASS
    assert res["install_success_rate"].verdict is Verdict.PASS


def test_a_3x_slower_canary_reads_3x_and_fails_latency_only() -> None:
    res = by_metric(evaluate(ML_GATES, group(0.8, 30, 1), group(0.8, 10, 2), OK_INSTALLS))
    assert res["p95_latency_ratio"].verdict is Verdict.FAIL
    assert res["p95_latency_ratio"].value == pytest.approx(3.0, rel=0.05)
    assert res["mean_confidence_ratio"].verdict is Verdict.PASS


def test_old_latency_bins_still_count_and_mix_with_new_ones() -> None:
    gate = Gate(metric=Metric.P95_LATENCY_RATIO, threshold=1.5, min_samples=100)
    old_control = group(0.8, 10, 2, edges=OLD_LATENCY_EDGES_MS)
    same = evaluate_gate(gate, group(0.8, 10, 1), old_control, OK_INSTALLS)
    assert same.verdict is Verdict.PASS and same.value == pytest.approx(1.0, rel=0.25)
    slow = evaluate_gate(gate, group(0.8, 30, 1), old_control, OK_INSTALLS)
    assert slow.verdict is Verdict.FAIL


def test_a_dropped_class_fails_even_when_the_total_rate_looks_fine() -> None:
    canary = group(0.8, 10, 1, drop="car", rate=1.2)  # more persons, no cars at all
    res = by_metric(evaluate(ML_GATES, canary, group(0.8, 10, 2), OK_INSTALLS))
    assert res["detection_rate_ratio"].verdict is Verdict.PASS
    dropped = res["class_detection_rate_ratio"]
    assert dropped.verdict is Verdict.FAIL and "car" in dropped.detail
    assert dropped.value == pytest.approx(0.0)


def test_fewer_detections_per_frame_fail_the_detection_rate_gate() -> None:
    fewer = group(0.8, 10, 1, rate=0.5)
    res = by_metric(evaluate(ML_GATES, fewer, group(0.8, 10, 2), OK_INSTALLS))
    assert res["detection_rate_ratio"].verdict is Verdict.FAIL
    assert res["detection_rate_ratio"].value == pytest.approx(0.5, abs=0.08)


def test_missing_or_thin_data_is_nodata_never_a_pass() -> None:
    res = by_metric(evaluate(ML_GATES, Aggregate(), group(0.8, 10, 2), Installs(1, 0, 0)))
    res.pop("card_map50_drop")
    assert {r.verdict for r in res.values()} == {Verdict.NODATA}
    # Two windows show a clear drop but are not the five the gate asks for.
    r = evaluate_gate(ML_GATES[3], group(0.3, 10, 1, windows=2), group(0.8, 10, 2), OK_INSTALLS)
    assert r.verdict is Verdict.NODATA and "windows 2/" in r.detail
    thin = Gate(metric=Metric.MEAN_CONFIDENCE_RATIO, threshold=0.9, min_samples=10_000)
    r = evaluate_gate(thin, group(0.2, 10, 1), group(0.8, 10, 2), OK_INSTALLS)
    assert r.verdict is Verdict.NODATA


def test_control_is_read_over_the_canary_windows_only() -> None:
    gate = Gate(metric=Metric.DETECTION_RATE_RATIO, threshold=0.8, min_samples=100)
    canary = group(0.8, 10, 1, windows=6)  # windows 0-5
    control = group(0.8, 10, 2, windows=6)
    # Busy hours before the canary started would make the canary look blind.
    hour = timedelta(hours=1)
    earlier = [
        dataclasses.replace(u, start=u.start - hour, end=u.end - hour)  # type: ignore[operator]
        for u in group(0.8, 10, 3, windows=6, rate=3.0).units
    ]
    both = Aggregate.of_units([*control.units, *earlier])
    r = evaluate_gate(gate, canary, both, OK_INSTALLS)
    assert r.verdict is Verdict.PASS and r.value == pytest.approx(1.0, abs=0.1)


def test_install_failures_fail_even_without_install_gates() -> None:
    results = evaluate([], Aggregate(), Aggregate(), Installs(assigned=2, committed=1, failed=1))
    assert [(r.metric, r.verdict) for r in results] == [("errors", Verdict.FAIL)]
    rate = Gate(metric=Metric.INSTALL_SUCCESS_RATE, threshold=1.0)
    assert evaluate_gate(rate, Aggregate(), Aggregate(), Installs(2, 1, 1)).value == 0.5


def test_baseline_replaces_control_for_drift_and_only_warns() -> None:
    canary = group(0.8, 10, 1)
    psi_gate = Gate(metric=Metric.PSI, threshold=0.2, min_samples=10)
    shifted = bin_counts(list(np.full(500, 0.3)), CONFIDENCE_EDGES)
    r = evaluate_gate(psi_gate, canary, group(0.8, 10, 2), OK_INSTALLS, baseline=shifted)
    assert r.verdict is Verdict.WARN and "baseline" in r.detail
    assert stage_outcome([r], soak_over=True, grace_over=False) is Outcome.SUCCESSFUL


def test_the_sequential_test_holds_its_false_alarm_rate_over_many_looks() -> None:
    """A statistic exactly at the threshold, looked at after each of 200 observations:
    the mSPRT crosses in at most alpha of the runs (Ville), a fixed z-test would not."""
    rng = np.random.default_rng(7)
    alpha, runs, crossed, naive = 0.1, 400, 0, 0
    n = np.arange(1, 201)
    for _ in range(runs):
        mean = np.cumsum(rng.normal(0.0, 1.0, 200)) / n
        var = 1.0 / n
        crossed += any(
            crosses(Stat(m, m, v, "ratio"), alpha) for m, v in zip(mean, var, strict=True)
        )
        naive += any(m / math.sqrt(v) > 1.2816 for m, v in zip(mean, var, strict=True))
    assert crossed / runs <= alpha
    assert naive / runs > 3 * alpha  # why repeated fixed tests are not allowed


def test_stage_outcome_rules() -> None:
    good = evaluate(ML_GATES, group(0.8, 10, 1), group(0.8, 10, 2), OK_INSTALLS)
    bad = evaluate(ML_GATES, group(0.5, 10, 1), group(0.8, 10, 2), OK_INSTALLS)
    none = evaluate(ML_GATES, Aggregate(), Aggregate(), Installs(1, 1, 0))
    assert stage_outcome(bad, soak_over=False, grace_over=False) is Outcome.FAILED  # crossed
    assert stage_outcome(good, soak_over=False, grace_over=False) is Outcome.PENDING
    assert stage_outcome(good, soak_over=True, grace_over=False) is Outcome.SUCCESSFUL
    assert stage_outcome(none, soak_over=True, grace_over=False) is Outcome.PENDING
    assert stage_outcome(none, soak_over=True, grace_over=True) is Outcome.INCONCLUSIVE


# --- one scheduler tick, decided purely ----------------------------------------------------


def _spec(**kw: object) -> RolloutSpec:
    return RolloutSpec.model_validate({"model": "m", "version": "v2", **kw})


def _fleet(n: int, **state: Member) -> dict[str, Member]:
    members = {f"cam-{i:02d}": Member({"site": f"s{i % 2}"}) for i in range(n)}
    members.update(state)
    return members


def test_plan_assigns_the_first_stage_then_waits_for_commits() -> None:
    spec = _spec(stages="1,50%,100%", soak_s=60)
    p = plan(Snapshot(1, spec, 0, None, _fleet(10)), T0)
    assert len(p.assign) == 1 and p.next is Next.STAY and p.ready_at is None
    d = p.assign[0]
    assigned = _fleet(10, **{d: Member({"site": "s0"}, assigned=True)})
    assert plan(Snapshot(1, spec, 0, None, assigned), T0).assign == []
    done = _fleet(10, **{d: Member({"site": "s0"}, assigned=True, done=True)})
    p = plan(Snapshot(1, spec, 0, None, done), T0)
    assert p.ready_at == T0 and p.next is Next.STAY  # soak starts
    p = plan(Snapshot(1, spec, 0, T0, done), T0 + timedelta(seconds=61))
    assert p.next is Next.NEXT_STAGE


def test_plan_respects_max_concurrent_and_maintenance_windows() -> None:
    spec = _spec(max_concurrent=2)
    assert len(plan(Snapshot(1, spec, 0, None, _fleet(10)), T0).assign) == 2
    closed = _spec(maintenance_windows=[{"cron": "* 3 * * *", "selector": {"site": "s0"}}])
    p = plan(Snapshot(1, closed, 0, None, _fleet(10)), T0)  # 12:00, window is 03:xx
    assert sorted(p.assign) == [f"cam-{i:02d}" for i in range(1, 10, 2)]  # s1 only


def test_plan_fails_a_stage_on_a_failing_gate_and_names_it() -> None:
    spec = _spec(stages="1,100%", gates="ml", on_failure="rollback")
    bad = evaluate(spec.gates, group(0.5, 10, 1), group(0.8, 10, 2), OK_INSTALLS)
    members = _fleet(4, **{"cam-00": Member({}, assigned=True, done=True)})
    p = plan(Snapshot(1, spec, 0, T0, members, bad), T0)
    assert p.next is Next.FAIL
    assert p.reason is not None and "mean_confidence_ratio" in p.reason
    assert p.reason.startswith("stage 1 (1) failed")


def test_plan_pauses_inconclusive_and_succeeds_the_last_stage() -> None:
    spec = _spec(gates="ml", soak_s=10, nodata_grace_s=5)
    members = {f"d{i}": Member({}, assigned=True, done=True) for i in range(3)}
    none = evaluate(spec.gates, Aggregate(), Aggregate(), Installs(3, 3, 0))
    assert plan(Snapshot(1, spec, 0, T0, members, none), T0 + timedelta(seconds=12)).next is (
        Next.STAY
    )
    assert plan(Snapshot(1, spec, 0, T0, members, none), T0 + timedelta(seconds=16)).next is (
        Next.PAUSE
    )
    good = evaluate(spec.gates, group(0.8, 10, 1), group(0.8, 10, 2), Installs(3, 3, 0))
    assert plan(Snapshot(1, spec, 0, T0, members, good), T0 + timedelta(seconds=10)).next is (
        Next.SUCCEED
    )


# --- the model cards, before any device ----------------------------------------------------


@dataclasses.dataclass
class Card:
    version: str
    map50: float | None
    labelled_images: int = 50
    ap50_per_class: dict[str, float] = dataclasses.field(default_factory=dict)


CARD_GATE = Gate(metric=Metric.CARD_MAP50_DROP, threshold=0.05)


def test_a_canary_card_worse_than_production_fails_before_any_device() -> None:
    cards = Cards(
        Card("v2", 0.451, ap50_per_class={"person": 0.7, "bicycle": 0.0}),
        Card("v1", 0.584, ap50_per_class={"person": 0.7, "bicycle": 0.4}),
    )
    spec = _spec(stages="1,100%", gates="ml", on_failure="rollback")
    results = evaluate(spec.gates, Aggregate(), Aggregate(), Installs(0, 0, 0), cards=cards)
    card = by_metric(results)["card_map50_drop"]
    assert card.verdict is Verdict.FAIL and card.value == pytest.approx(0.133)
    assert "bicycle" in card.detail
    p = plan(Snapshot(1, spec, 0, None, _fleet(4), results), T0)
    assert p.next is Next.FAIL and p.assign == [] and "card_map50_drop" in (p.reason or "")


def test_the_card_gate_passes_small_drops_and_skips_without_labels() -> None:
    close = Cards(Card("v2", 0.57), Card("v1", 0.584))
    assert card_gate(CARD_GATE, close).verdict is Verdict.PASS
    for pair in (
        None,
        Cards(Card("v2", None), Card("v1", 0.584)),
        Cards(Card("v2", 0.2, labelled_images=10), Card("v1", 0.584)),
    ):
        r = card_gate(CARD_GATE, pair)
        assert r.verdict is Verdict.SKIPPED, r
    assert stage_outcome([r], soak_over=True, grace_over=False) is Outcome.SUCCESSFUL


def test_the_production_version_is_what_most_selected_devices_run() -> None:
    running = [("m", "v1"), ("m", "v1"), ("m", "v0"), ("m", "v2"), ("other", "v9"), (None, None)]
    found: list[tuple[str, str]] = []

    def find(model: str, version: str) -> Card:
        found.append((model, version))
        return Card(version, 0.5)

    pair = card_pair(find, "m", "v2", running)
    assert pair is not None and pair.production is not None
    assert pair.production.version == "v1" and found == [("m", "v2"), ("m", "v1")]
    assert card_pair(find, "m", "v2", [("m", "v2")]) == Cards(Card("v2", 0.5), None)


def test_an_estimate_past_the_threshold_is_never_a_pass_even_when_not_significant() -> None:
    gate = Gate(metric=Metric.DETECTION_RATE_RATIO, threshold=0.8, min_samples=100)
    canary = group(0.8, 10, 1, windows=5, rate=0.7)  # past 0.8, but only 5 windows
    r = evaluate_gate(gate, canary, group(0.8, 10, 2, windows=5), OK_INSTALLS)
    assert r.verdict is Verdict.NODATA and r.detail.startswith("leaning harmful"), r
    assert stage_outcome([r], soak_over=True, grace_over=False) is Outcome.PENDING
    assert stage_outcome([r], soak_over=True, grace_over=True) is Outcome.INCONCLUSIVE


def test_a_canary_devices_fallback_fails_the_stage_at_once() -> None:
    """A canary device that fell back from the version (it would not load after commit)
    counts against the canary as an error: a hard failure, before the soak ends, even
    when no error gate was asked for; without fallbacks the same evidence is pending."""
    canary, control = group(0.8, 10, 1), group(0.8, 10, 2)
    clean = evaluate(ML_GATES, canary, control, Installs(3, 3, 0, fallbacks=0))
    assert by_metric(clean)["errors"].verdict is Verdict.PASS
    assert stage_outcome(clean, soak_over=False, grace_over=False) is Outcome.PENDING

    fell = evaluate(ML_GATES, canary, control, Installs(3, 3, 0, fallbacks=1))
    errors = by_metric(fell)["errors"]
    assert errors.verdict is Verdict.FAIL and errors.value == 1.0 and errors.kind == "hard"
    assert stage_outcome(fell, soak_over=False, grace_over=False) is Outcome.FAILED

    implicit = evaluate([], Aggregate(), Aggregate(), Installs(1, 1, 0, fallbacks=2))
    assert [(r.metric, r.verdict, r.value) for r in implicit] == [("errors", Verdict.FAIL, 2.0)]
