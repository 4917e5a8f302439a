"""Drift alerts end to end: real scene changes, real inference, the controller's watcher.

``edgefleet bench drift --seeds N`` (docs: bench/README.md):

1. **Scenes**: the project's synthetic frames (``models/make_dataset.py``) as they are,
   and the same frames ``darkened`` (x 0.3), ``noisy`` (Gaussian pixel noise, sd 40) and
   ``blurred`` (Gaussian blur, sd 3).
2. **Inference**: the shipped model (``models/shapes/v2``) runs once over every frame of
   every scene with the agent's own ``Detector`` at the card's measurement cut.
3. **Fleet**: one site per scene (``unchanged``, ``darkened``, ``noisy``, ``blurred``),
   ``--devices`` devices each; a site looks at its own mix of the frames (a Dirichlet
   weighting) and each device misses a small share of detections. Every minute each
   device resamples per-frame results into the agent's ``WindowAccumulator`` and sends
   its window. At ``--change-min`` the three changed sites switch to their scene's
   results; the ``unchanged`` site never does.
4. **Judgement**: the windows go into an SQLite database (the controller's tables) and
   the controller's ``AlertWatcher`` polls after every minute with the rules of
   ``docs/DRIFT.md`` (site scope, captured baseline: detection rate, empty share, PSI).

A true alert is one on a changed site (its site scope or one of its devices) after the
change; everything else (an unchanged site, any site before its change) is false.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from edgefleet.agent.monitor import WindowAccumulator
from edgefleet.controller.alerts.config import AlertConfig
from edgefleet.controller.alerts.notify import WebhookNotifier
from edgefleet.controller.alerts.rules import Rule
from edgefleet.controller.alerts.watch import AlertWatcher
from edgefleet.controller.cards import CardStore
from edgefleet.controller.db import make_engine, session_scope
from edgefleet.controller.models.alerts import AlertRow
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.telemetry import TelemetryWindowRow
from sqlmodel import Session, col, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_canary import SOURCE, Run, frames, infer  # the sibling module

T0 = datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc)
COLUMNS = frozenset(TelemetryWindowRow.model_fields) - {"id"}
SCENES = ("unchanged", "darkened", "noisy", "blurred")

# The site rules of docs/DRIFT.md, each against the first 6 minutes the version sent there.
RULES = (
    Rule(metric="detection_rate", scope="site", baseline="captured", baseline_windows=6,
         fire_above=0.5, clear_below=0.3, fire_after=2, clear_after=2, min_frames=30,
         min_expected=20),
    Rule(metric="empty_share", scope="site", baseline="captured", baseline_windows=6,
         fire_above=0.3, clear_below=0.15),
    Rule(metric="psi", scope="site", baseline="captured", baseline_windows=6, fire_above=0.25,
         clear_below=0.1, min_detections=200),
)  # fmt: skip


def scene(name: str, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name == "darkened":
        return (img.astype(np.float32) * 0.3).astype(np.uint8)
    if name == "noisy":
        noisy = img.astype(np.float32) + rng.normal(0, 40, img.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    if name == "blurred":
        return cv2.GaussianBlur(img, (0, 0), 3)
    return img


def run_scenes(frames_n: int) -> dict[str, Run]:
    images = frames(frames_n)
    rng = np.random.default_rng(5)
    return {
        name: infer({"m": SOURCE}, [scene(name, i, rng) for i in images], repeats=1)["m"]
        for name in SCENES
    }


def trial(
    runs: dict[str, Run], seed: int, *, devices: int = 2, fps: float = 1.0,
    change_min: int = 12, minutes: int = 24, workdir: Path | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One fleet over ``minutes``: per site, the alerts (scope, metric, minute fired)."""
    rng = np.random.default_rng(seed)
    n = len(runs["unchanged"].latency_ms)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'drift.db'}")
        now = [T0]
        watcher = AlertWatcher(engine, CardStore(Path(tmp) / "cards"), AlertConfig(rules=RULES),
                               WebhookNotifier([]), clock=lambda: now[0])  # fmt: skip
        fleet = []
        with session_scope(engine) as s:
            for site in SCENES:
                mix = rng.dirichlet(np.full(n, 2.0))
                for i in range(devices):
                    did = f"{site}-cam{i}"
                    s.add(
                        Device(device_id=did, labels={"site": site}, model="shapes", version="v2")
                    )
                    fleet.append((did, site, mix, float(rng.uniform(0, 0.05)),
                                  WindowAccumulator(did, T0)))  # fmt: skip
        watcher.resume()
        for minute in range(minutes):
            end = T0 + timedelta(minutes=minute + 1)
            rows = []
            for _did, site, mix, miss, acc in fleet:
                run = runs[site if minute >= change_min else "unchanged"]
                for i in rng.choice(n, size=int(60 * fps), p=mix):
                    kept = [d for d in run.detections[i] if rng.random() >= miss]
                    acc.record_frame(run.latency_ms[i], kept, model="shapes", version="v2")
                w = acc.roll(end - timedelta(seconds=1))  # inside this minute's bucket
                fields = {k: v for k, v in w.model_dump().items() if k in COLUMNS}
                rows.append(TelemetryWindowRow(**fields))
            with session_scope(engine) as s:
                s.add_all(rows)
            now[0] = end
            watcher.poll()
        with Session(engine) as s:
            alerts = list(s.exec(select(AlertRow).order_by(col(AlertRow.id))).all())
        engine.dispose()
    out = []
    for a in alerts:
        site = a.labels.get("site") or a.scope.split(":", 1)[-1].split("-cam")[0]
        fired_min = (a.fired_at.replace(tzinfo=timezone.utc) - T0).total_seconds() / 60
        out.append({"scope": a.scope, "site": site, "metric": a.metric, "value": a.value,
                    "fired_min": fired_min})  # fmt: skip
    return out


def bench(
    seeds: int = 5, *, frames_n: int = 60, devices: int = 2, fps: float = 1.0,
    change_min: int = 12, minutes: int = 24, scenes: Sequence[str] = SCENES,
) -> dict[str, Any]:  # fmt: skip
    runs = run_scenes(frames_n)
    base = runs["unchanged"]
    rows: dict[str, dict[str, Any]] = {  # one JSON row per scene
        s: {"scene": s, "changed": s != "unchanged", "alerted": 0, "minutes_to_alert": [],
            "false_alerts": 0, "metrics": {}} for s in scenes
    }  # fmt: skip
    for s in scenes:
        r = runs[s]
        rows[s]["detections_per_frame"] = sum(map(len, r.detections)) / len(r.detections)
        rows[s]["base_detections_per_frame"] = sum(map(len, base.detections)) / len(base.detections)
    for seed in range(seeds):
        alerts = trial(runs, seed, devices=devices, fps=fps, change_min=change_min,
                       minutes=minutes)  # fmt: skip
        for site in scenes:
            mine = [a for a in alerts if a["site"] == site]
            true = [a for a in mine if site != "unchanged" and a["fired_min"] > change_min]
            rows[site]["false_alerts"] += len(mine) - len(true)
            if true:
                rows[site]["alerted"] += 1
                rows[site]["minutes_to_alert"].append(
                    min(a["fired_min"] for a in true) - change_min
                )
                for a in true:
                    m = rows[site]["metrics"]
                    m[a["metric"]] = m.get(a["metric"], 0) + 1
    table = list(rows.values())
    return {
        "seeds": seeds, "frames": frames_n, "devices_per_site": devices, "fps": fps,
        "change_min": change_min, "minutes": minutes, "rows": table,
        "true_alerts": sum(r["alerted"] for r in table if r["changed"]),
        "missed": sum(seeds - r["alerted"] for r in table if r["changed"]),
        "false_alerts": sum(r["false_alerts"] for r in table),
        "max_minutes_to_alert": max((t for r in table for t in r["minutes_to_alert"]),
                                    default=None),
    }  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{len(result['rows'])} sites x {result['devices_per_site']} devices, one window a "
        f"minute at {result['fps']:g} fps, scene change at minute {result['change_min']}, "
        f"{result['minutes']} minutes, {result['frames']} frames, {result['seeds']} seeds"
    )
    print(f"{'scene':10} {'changed':>7} {'det/frame':>9} {'alerted':>7} {'false':>5} "
          f"{'min to alert':>12}  by")  # fmt: skip
    for r in result["rows"]:
        t = r["minutes_to_alert"]
        when = f"{min(t):.0f}-{max(t):.0f}" if t else "-"
        by = ", ".join(f"{k} {v}" for k, v in sorted(r["metrics"].items()))
        print(f"{r['scene']:10} {'yes' if r['changed'] else 'no':>7} "
              f"{r['detections_per_frame']:9.2f} {r['alerted']:>4}/{result['seeds']:<2} "
              f"{r['false_alerts']:>5} {when:>12}  {by}")  # fmt: skip
    worst = result["max_minutes_to_alert"]
    print(f"true alerts {result['true_alerts']}, missed {result['missed']}, false alerts "
          f"{result['false_alerts']}, slowest alert "
          f"{'-' if worst is None else f'{worst:.0f} min'} after the change")  # fmt: skip
