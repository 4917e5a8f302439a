"""Canary gates: false-alarm rate, power and time to decision, in one run.

A simulated fleet of sites, each with canary and matched control devices, produces real
telemetry windows (``shared.protocol.TelemetryWindow`` with the agent's histogram bins,
``shared.histogram.bin_counts``) every ``--window-s`` seconds. The real judgement
(``gates.evaluate`` + ``gates.stage_outcome``, as ``advance.plan`` calls them) looks after
every window, the scheduler's look schedule, until the stage fails or the soak ends.

Every device has a site factor and a device factor on its detection rate, a per-window
busyness (over-dispersed counts), a daily light cycle (compressed into ``--day-s``) that
moves detection rate, confidence and latency of both arms alike, and lognormal per-frame
latency. Variants of the canary's model:

* harmless: ``identical`` (a metadata-only re-export), ``tiny-noise`` (confidence jitter,
  2 % fewer detections, 3 % slower), ``light-cycle`` (identical model, a strong light
  cycle on both arms);
* harmful: ``lower-confidence`` (x0.75), ``dropped-class`` (never detects ``bicycle``,
  13 % of detections), ``3x-slower``, ``fewer-detections`` (x0.6).

A harmless run that fails is a false alarm; a harmful run that passes is a miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from edgefleet.controller.rollouts.gates import (
    Aggregate,
    Installs,
    Outcome,
    evaluate,
    failing,
    stage_outcome,
)
from edgefleet.controller.rollouts.spec import ML_GATES, Gate, Metric
from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS, bin_counts
from edgefleet.shared.protocol import TelemetryWindow

T0 = datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc)
CLASSES = {"person": (1.0, 0.72), "car": (0.6, 0.78), "bicycle": (0.25, 0.62)}  # rate, conf
LATENCY_MS = 22.0
CUT = 0.25  # the detector's confidence cut: lower scores are never seen
LOW = 0.5  # the agent's low-confidence cut


@dataclass(frozen=True)
class Variant:
    name: str
    harmful: bool
    rate: float = 1.0
    confidence: float = 1.0
    conf_jitter: float = 0.0
    latency: float = 1.0
    dropped: str | None = None
    light: float = 0.15  # amplitude of the daily light cycle (both arms)


VARIANTS = (
    Variant("identical", False),
    Variant("tiny-noise", False, rate=0.98, conf_jitter=0.02, latency=1.03),
    Variant("light-cycle", False, light=0.5),
    Variant("lower-confidence", True, confidence=0.75),
    Variant("dropped-class", True, dropped="bicycle"),
    Variant("3x-slower", True, latency=3.0),
    Variant("fewer-detections", True, rate=0.6),
)


@dataclass
class Device:
    device_id: str
    site: int
    factor: float  # site x device effect on the detection rate
    speed: float  # device latency factor
    canary: bool


def _fleet(
    rng: np.random.Generator, sites: int, canaries: int, controls: int, device_sd: float = 0.05
) -> list[Device]:
    out = []
    for s in range(sites):
        site = float(rng.lognormal(0, 0.25))
        for i in range(canaries + controls):
            out.append(Device(f"s{s}-{i}", s, site * float(rng.lognormal(0, device_sd)),
                              float(rng.lognormal(0, 0.05)), i < canaries))  # fmt: skip
    return out


def _window(
    rng: np.random.Generator, dev: Device, v: Variant | None, t0: float, window_s: float,
    fps: float, day_s: float, light_amp: float,
) -> TelemetryWindow:  # fmt: skip
    frames = int(window_s * fps)
    light = 1.0 + light_amp * math.sin(2 * math.pi * t0 / day_s)  # both arms alike
    busy = float(rng.gamma(8.0, 1 / 8.0))  # this window's scene: over-dispersed counts
    confs: list[float] = []
    per_class: dict[str, list[int]] = {}
    for name, (rate, conf) in CLASSES.items():
        lam = rate * dev.factor * light * busy * (v.rate if v else 1.0)
        if v and v.dropped == name:
            lam = 0.0
        n = int(rng.poisson(lam * frames))
        mean = conf * (0.85 + 0.15 * light) * (v.confidence if v else 1.0)
        c = rng.beta(mean * 12, (1 - min(mean, 0.97)) * 12, n)
        if v and v.conf_jitter:
            c = c + rng.normal(0, v.conf_jitter, n)
        c = np.clip(c, 0, 1)
        c = c[c >= CUT]
        per_class[name] = bin_counts(c, CONFIDENCE_EDGES)
        confs.extend(c.tolist())
    lat = LATENCY_MS * dev.speed * (v.latency if v else 1.0) * (1.0 + 0.1 * (light - 1.0))
    latencies = rng.lognormal(math.log(lat), 0.2, frames)
    start = T0 + timedelta(seconds=t0)
    return TelemetryWindow(
        device_id=dev.device_id, model="m", version="v2" if v else "v1",
        window_start=start, window_end=start + timedelta(seconds=window_s), frames=frames,
        latency_edges_ms=list(LATENCY_EDGES_MS),
        latency_counts=bin_counts(latencies, LATENCY_EDGES_MS),
        confidence_edges=list(CONFIDENCE_EDGES),
        confidence_counts=bin_counts(confs, CONFIDENCE_EDGES),
        per_class_confidence={k: per_class[k] for k in sorted(per_class) if sum(per_class[k])},
        detections=len(confs), low_confidence=sum(c < LOW for c in confs),
    )  # fmt: skip


def run_stage(
    variant: Variant, seed: int, *, gates: tuple[Gate, ...] = ML_GATES, sites: int = 3,
    canaries: int = 1, controls: int = 1, window_s: float = 10.0, soak_s: float = 600.0,
    fps: float = 10.0, day_s: float = 600.0, alpha: float = 0.01, device_sd: float = 0.05,
) -> tuple[Outcome, float, str]:  # fmt: skip
    """One stage of one rollout: (outcome, seconds to decision, why)."""
    rng = np.random.default_rng(seed)
    fleet = _fleet(rng, sites, canaries, controls, device_sd)
    start = float(rng.uniform(0, day_s))  # where in the day the stage starts
    installs = Installs(assigned=sites * canaries, committed=sites * canaries, failed=0)
    canary, control = Aggregate(), Aggregate()
    strata = {d.device_id: f"site-{d.site}" for d in fleet}  # --stratify-by site
    looks = math.ceil(soak_s / window_s)
    # The spec's default grace: as long again as the soak before NODATA pauses the stage.
    for look in range(1, 2 * looks + 1):
        t = start + (look - 1) * window_s
        for dev in fleet:
            w = _window(rng, dev, variant if dev.canary else None, t, window_s, fps, day_s,
                        variant.light)  # fmt: skip
            (canary if dev.canary else control).add(w)
        results = evaluate(gates, canary, control, installs, alpha=alpha, strata=strata)
        outcome = stage_outcome(results, soak_over=look >= looks, grace_over=look == 2 * looks)
        if outcome is not Outcome.PENDING:
            why = ", ".join(failing(results)) or outcome.value
            return outcome, look * window_s, why
    return Outcome.PENDING, 2 * looks * window_s, "undecided"


def bench(
    seeds: int = 20, *, sites: int = 3, canaries: int = 1, controls: int = 1,
    window_s: float = 10.0, soak_s: float = 600.0, alpha: float = 0.01,
    variants: tuple[Variant, ...] = VARIANTS,
) -> dict[str, Any]:  # fmt: skip
    rows: list[dict[str, Any]] = []  # one JSON row per variant
    for v in variants:
        outcomes: list[Outcome] = []
        times: list[float] = []
        reasons: dict[str, int] = {}
        for seed in range(seeds):
            outcome, t, why = run_stage(v, seed, sites=sites, canaries=canaries,
                                        controls=controls, window_s=window_s, soak_s=soak_s,
                                        alpha=alpha)  # fmt: skip
            outcomes.append(outcome)
            times.append(t)
            if outcome is Outcome.FAILED:
                key = why.split(" (")[0]
                reasons[key] = reasons.get(key, 0) + 1
        failed = sum(o is Outcome.FAILED for o in outcomes)
        passed = sum(o is Outcome.SUCCESSFUL for o in outcomes)
        fail_times = [t for o, t in zip(outcomes, times, strict=True) if o is Outcome.FAILED]
        rows.append({
            "variant": v.name, "harmful": v.harmful, "runs": seeds, "failed": failed,
            "passed": passed, "inconclusive": seeds - failed - passed,
            "false_alarm_rate": None if v.harmful else failed / seeds,
            "power": failed / seeds if v.harmful else None,
            "median_s_to_fail": float(np.median(fail_times)) if fail_times else None,
            "failed_by": reasons,
        })  # fmt: skip
    harmless = [r for r in rows if not r["harmful"]]
    harmful = [r for r in rows if r["harmful"]]
    return {
        "seeds": seeds, "sites": sites, "canaries_per_site": canaries,
        "controls_per_site": controls, "window_s": window_s, "soak_s": soak_s, "alpha": alpha,
        "rows": rows,
        "false_positives": sum(r["failed"] for r in harmless),
        "false_negatives": sum(r["runs"] - r["failed"] for r in harmful),
    }  # fmt: skip


def calibrate(
    seeds: int = 100, *, sites: int = 3, canaries: int = 1, controls: int = 1,
    window_s: float = 10.0, soak_s: float = 600.0, alpha: float = 0.2,
) -> dict[str, Any]:  # fmt: skip
    """The worst harmless case: a canary exactly at the detection-rate threshold (0.8;
    no device effect, so the true ratio is exactly that), judged by that gate alone at
    ``alpha``; the share failed must stay under alpha."""
    gate = (Gate(metric=Metric.DETECTION_RATE_RATIO, threshold=0.8, min_samples=200),)
    at = Variant("at-threshold", False, rate=0.8)
    failed = sum(
        run_stage(at, seed, gates=gate, sites=sites, canaries=canaries, controls=controls,
                  window_s=window_s, soak_s=soak_s, alpha=alpha, device_sd=0.0)[0]
        is Outcome.FAILED
        for seed in range(seeds)
    )  # fmt: skip
    return {"calibration": True, "seeds": seeds, "sites": sites, "alpha": alpha,
            "failed": failed, "false_alarm_rate": failed / seeds}  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    if result.get("calibration"):
        print(f"canary at the detection-rate threshold, {result['sites']} sites, "
              f"alpha {result['alpha']:g}: failed {result['failed']} of {result['seeds']} "
              f"({result['false_alarm_rate']:.2f}; must be <= alpha)")  # fmt: skip
        return
    print(f"{result['sites']} sites x ({result['canaries_per_site']} canary + "
          f"{result['controls_per_site']} control), {result['window_s']:g} s windows, "
          f"soak {result['soak_s']:g} s, alpha {result['alpha']:g}, "
          f"{result['seeds']} seeds")  # fmt: skip
    print(f"{'variant':18} {'harm':>4} {'failed':>7} {'passed':>7} {'incon.':>7} {'rate':>6} "
          f"{'t_fail':>7}  failed by")  # fmt: skip
    for r in result["rows"]:
        rate = r["power"] if r["harmful"] else r["false_alarm_rate"]
        t = "-" if r["median_s_to_fail"] is None else f"{r['median_s_to_fail']:.0f}s"
        by = ", ".join(f"{k} {n}" for k, n in sorted(r["failed_by"].items()))
        print(f"{r['variant']:18} {'yes' if r['harmful'] else 'no':>4} {r['failed']:>7} "
              f"{r['passed']:>7} {r['inconclusive']:>7} {rate:>6.2f} {t:>7}  {by}")  # fmt: skip
    print(
        f"false positives {result['false_positives']}, false negatives {result['false_negatives']}"
    )
