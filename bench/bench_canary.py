"""Canary verdicts end to end: real model variants, real inference, the scheduler's judgement.

``edgefleet bench canary --seeds N`` (docs: bench/README.md):

1. **Variants** of a shipped model (``models/shapes/v2``) are built by editing its ONNX
   graph right after the head's class ``Sigmoid`` (class scores, 1 x classes x anchors):
   ``identical`` (metadata only), ``tiny-noise`` (scores x (1 +- 1 %) per anchor),
   ``lower-confidence`` (scores x 0.7), ``dropped-class`` (one class's scores x 0),
   ``fewer-detections`` (every other anchor's scores x 0) and ``3x-slower`` (a branch of
   real convolutions on the input whose result, times zero, is added to the scores; its
   depth is calibrated so ONNX Runtime takes about 3x as long).
2. **Inference**: every variant and the production model run once, interleaved frame by
   frame, over the project's synthetic frames (``models/make_dataset.py``) with the agent's
   own ``Detector`` at the card's measurement cut; per frame the detections and the latency.
3. **Fleet**: sites x devices; each site looks at its own mix of the frames (a Dirichlet
   weighting), each device has a speed factor and a small per-detection miss rate, and each
   frame's latency gets jitter. Devices resample per-frame results of the model they run
   and fill the agent's ``WindowAccumulator`` (the telemetry window the agent publishes).
4. **Judgement**: every window the scheduler's tick is replayed: canary and matched control
   windows are chosen as ``service._gate_results`` does (``cohorts.control_group``),
   judged by ``gates.evaluate`` with the ML gates, and ``advance.plan`` decides assign /
   stay / next stage / fail / pause / succeed.

A harmless variant that fails is a false positive; a harmful one that does not fail is a
false negative. Time to decision is counted in soak periods from the first assignment.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from edgefleet.agent.monitor import WindowAccumulator
from edgefleet.controller.rollouts import advance as adv
from edgefleet.controller.rollouts.cohorts import control_group
from edgefleet.controller.rollouts.gates import Aggregate, Installs, evaluate
from edgefleet.controller.rollouts.spec import RolloutSpec
from edgefleet.shared.measure import MEASURE_CONF
from edgefleet.shared.protocol import TelemetryWindow
from onnx import helper, numpy_helper

from edgefleet.runtime.backend import Detection
from edgefleet.runtime.detector import Detector

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "models" / "shapes" / "v2" / "model.onnx"
HEAD_SIGMOID = "/model.23/Sigmoid"  # class scores (1, classes, anchors) of the YOLO26 head
T0 = datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Variant:
    name: str
    harmful: bool
    what: str


VARIANTS = (
    Variant("identical", False, "metadata-only re-export"),
    Variant("tiny-noise", False, "scores x (1 +- 1 %) per anchor"),
    Variant("lower-confidence", True, "scores x 0.7"),
    Variant("dropped-class", True, "one class's scores x 0"),
    Variant("fewer-detections", True, "every other anchor's scores x 0"),
    Variant("3x-slower", True, "extra real convolutions, ~3x latency"),
)


# --- building the variants -------------------------------------------------------------


def _scale_scores(model: onnx.ModelProto, factor: np.ndarray, tag: str) -> onnx.ModelProto:
    """Multiply the head's class scores by ``factor`` (broadcast to 1 x classes x anchors)."""
    nodes = list(model.graph.node)
    index = next((i for i, n in enumerate(nodes) if n.name == HEAD_SIGMOID), None)
    if index is None:
        raise SystemExit(f"{SOURCE}: no {HEAD_SIGMOID} node (not a YOLO26 end-to-end export?)")
    sigmoid = nodes[index]
    scores, raw = sigmoid.output[0], f"edgefleet_{tag}/raw_scores"
    sigmoid.output[0] = raw
    name = f"edgefleet_{tag}/factor"
    model.graph.initializer.append(numpy_helper.from_array(factor.astype(np.float32), name))
    model.graph.node.insert(index + 1, helper.make_node("Mul", [raw, name], [scores]))
    return model


def _score_shape(model: onnx.ModelProto) -> tuple[int, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = HEAD_SIGMOID + "_output_0"
    info = next(v for v in inferred.graph.value_info if v.name == out)
    dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
    return dims[1], dims[2]


def _slow(model: onnx.ModelProto, depth: int) -> onnx.ModelProto:
    """``depth`` 3x3 convolutions (16 channels) on the input, summed, times 0, added to the
    class scores: real work ONNX Runtime cannot skip, no change to any output."""
    rng = np.random.default_rng(0)
    g, x = model.graph, model.graph.input[0].name
    w0 = numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.1).astype(np.float32),
                                 "edgefleet_slow/w0")  # fmt: skip
    w = numpy_helper.from_array((rng.standard_normal((16, 16, 3, 3)) * 0.05).astype(np.float32),
                                "edgefleet_slow/w")  # fmt: skip
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "edgefleet_slow/zero")
    g.initializer.extend([w0, w, zero])
    nodes = [helper.make_node("Conv", [x, w0.name], ["edgefleet_slow/h0"], pads=[1, 1, 1, 1])]
    for i in range(depth):
        nodes.append(helper.make_node("Conv", [f"edgefleet_slow/h{i}", w.name],
                                      [f"edgefleet_slow/c{i}"], pads=[1, 1, 1, 1]))  # fmt: skip
        nodes.append(
            helper.make_node("Tanh", [f"edgefleet_slow/c{i}"], [f"edgefleet_slow/h{i + 1}"])
        )
    nodes += [
        helper.make_node(
            "ReduceSum", [f"edgefleet_slow/h{depth}"], ["edgefleet_slow/sum"], keepdims=0
        ),
        helper.make_node("Mul", ["edgefleet_slow/sum", zero.name], ["edgefleet_slow/nothing"]),
    ]
    nodes_all = list(g.node)
    index = next(i for i, n in enumerate(nodes_all) if n.name == HEAD_SIGMOID)
    sigmoid = nodes_all[index]
    scores, raw = sigmoid.output[0], "edgefleet_slow/raw_scores"
    sigmoid.output[0] = raw
    nodes.append(helper.make_node("Add", [raw, "edgefleet_slow/nothing"], [scores]))
    for k, n in enumerate(nodes):
        g.node.insert(index + 1 + k, n)
    return model


def _sort_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Topological order (the slow branch is inserted mid-graph)."""
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    pending, ordered = list(model.graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(not i or i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise SystemExit("variant graph has a cycle")
        pending = rest
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


def build(v: Variant, out_dir: Path, *, slow_depth: int = 4, stem: str | None = None) -> Path:
    model = onnx.load(str(SOURCE))
    classes, anchors = _score_shape(model)
    rng = np.random.default_rng(7)
    if v.name == "tiny-noise":
        _scale_scores(model, 1 + rng.uniform(-0.01, 0.01, (1, 1, anchors)), "noise")
    elif v.name == "lower-confidence":
        _scale_scores(model, np.array(0.7), "lower")
    elif v.name == "dropped-class":
        mask = np.ones((1, classes, 1))
        mask[0, dropped_class(classes), 0] = 0.0
        _scale_scores(model, mask, "dropped")
    elif v.name == "fewer-detections":
        _scale_scores(model, (np.arange(anchors) % 2 == 0).reshape(1, 1, anchors) * 1.0, "fewer")
    elif v.name == "3x-slower":
        _sort_nodes(_slow(model, slow_depth))
    meta = {p.key: p for p in model.metadata_props}
    if "description" in meta:  # the identical re-export differs in metadata only
        meta["description"].value = f"bench canary variant {v.name}: {v.what}"
    onnx.checker.check_model(model)
    path = out_dir / f"{stem or v.name}.onnx"
    onnx.save(model, str(path))
    return path


def dropped_class(classes: int) -> int:
    return 1 % classes  # "square" in the shapes model


# --- real inference --------------------------------------------------------------------


@dataclass
class Run:
    """One model over the frame set: per frame its detections and latency (ms)."""

    detections: list[list[Detection]] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)


def frames(n: int, seed: int = 11) -> list[np.ndarray]:
    path = ROOT / "models" / "make_dataset.py"
    spec = importlib.util.spec_from_file_location("edgefleet_make_dataset", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path} not found: bench canary needs a source checkout")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(seed)
    return [mod._make_image(rng)[0] for _ in range(n)]


def infer(
    models: dict[str, Path], images: Sequence[np.ndarray], repeats: int = 3
) -> dict[str, Run]:
    """Each model over every frame, interleaved run by run (model A, B, C, then A, B, C
    again) so that a burst of other load on the machine hits every model alike; a frame's
    latency is the fastest of its ``repeats`` runs (other load only adds time; the
    detections are the same each run)."""
    dets = {k: Detector.from_onnx(p, conf=MEASURE_CONF) for k, p in models.items()}
    runs = {k: Run() for k in models}
    try:
        for d in dets.values():
            d.warm_up(3)
        for img in images:
            best = dict.fromkeys(dets, math.inf)
            found: dict[str, list[Detection]] = {}
            for _ in range(repeats):
                for k, d in dets.items():
                    t = time.perf_counter()
                    found[k] = d.detect(img)
                    best[k] = min(best[k], (time.perf_counter() - t) * 1000)
            for k in dets:
                runs[k].latency_ms.append(best[k])
                runs[k].detections.append(found[k])
    finally:
        for d in dets.values():
            d.close()
    return runs


def calibrate_slow(tmp: Path, images: Sequence[np.ndarray], target: float = 3.0) -> int:
    """The conv depth that makes ORT closest to ``target`` times slower on these frames
    (measured, since the cost per layer depends on the machine)."""
    slow = Variant("3x-slower", True, "")
    depths = (1, 2, 3, 4, 6, 8, 12)
    paths = {"base": SOURCE}
    paths.update({str(d): build(slow, tmp, slow_depth=d, stem=f"slow-{d}") for d in depths})
    runs = infer(paths, images[:8])
    base = float(np.median(runs["base"].latency_ms))
    ratio = {d: float(np.median(runs[str(d)].latency_ms)) / base for d in depths}
    return min(depths, key=lambda d: abs(math.log(ratio[d] / target)))


# --- the simulated fleet and the scheduler's judgement ----------------------------------


@dataclass
class Device:
    device_id: str
    site: str
    weights: np.ndarray  # this site's mix of the frames
    speed: float
    miss: float  # share of detections this camera misses (both models alike)
    acc: WindowAccumulator


def _fleet(rng: np.random.Generator, n_frames: int, sites: int, per_site: int) -> list[Device]:
    out = []
    for s in range(sites):
        mix = rng.dirichlet(np.full(n_frames, 2.0))
        for i in range(per_site):
            did = f"site{s}-cam{i}"
            out.append(Device(did, f"site{s}", mix, float(rng.lognormal(0, 0.05)),
                              float(rng.uniform(0, 0.05)), WindowAccumulator(did, T0)))  # fmt: skip
    return out


def _window(
    rng: np.random.Generator, dev: Device, run: Run, version: str, frames: int, end: datetime
) -> TelemetryWindow:
    for i in rng.choice(len(run.latency_ms), size=frames, p=dev.weights):
        kept = [d for d in run.detections[i] if rng.random() >= dev.miss]
        lat = run.latency_ms[i] * dev.speed * float(rng.lognormal(0, 0.1))
        dev.acc.record_frame(lat, kept, model="shapes", version=version)
    return dev.acc.roll(end)


def rollout(
    runs: dict[str, Run], variant: str, seed: int, *, sites: int = 3, per_site: int = 4,
    stages: str = "25%,50%", soak_s: float = 300.0, window_s: float = 10.0, fps: float = 2.0,
) -> tuple[str, float, str]:  # fmt: skip
    """One staged rollout of ``variant``: (outcome, seconds from the first assignment to
    the decision, reason)."""
    rng = np.random.default_rng(seed)
    fleet = _fleet(rng, len(runs["production"].latency_ms), sites, per_site)
    labels = {d.device_id: {"site": d.site} for d in fleet}
    spec = RolloutSpec.model_validate({
        "model": "shapes", "version": variant, "stages": stages, "soak_s": soak_s, "gates": "ml",
        "stratify_by": "site",
    })  # fmt: skip
    members = {d: adv.Member(labels=labels[d]) for d in labels}
    stage, ready_at, started = 0, None, T0
    history: list[TelemetryWindow] = []
    now = T0
    limit = len(spec.stages) * (spec.soak_s + spec.grace_s) + 20 * window_s
    while (now - T0).total_seconds() <= limit:
        canaries = [d for d, m in members.items() if m.assigned]
        control = control_group(labels, canaries, spec.control_labels)
        since = [w for w in history if w.window_start >= started]
        canary_agg = Aggregate.of(
            w for w in since if w.device_id in canaries and w.version == variant
        )
        control_agg = Aggregate.of(
            w for w in since if w.device_id in set(control) and w.version != variant
        )
        installs = Installs(len(canaries), sum(members[d].done for d in canaries), 0)
        results = evaluate(spec.gates, canary_agg, control_agg, installs,
                           alpha=spec.false_alarm_rate,
                           strata={d: repr([labels[d].get(k) for k in spec.control_labels])
                                   for d in labels})  # fmt: skip
        snap = adv.Snapshot(1, spec, stage, ready_at, members, results, started)
        p = adv.plan(snap, now)
        t = (now - T0).total_seconds()
        if p.next is adv.Next.FAIL:
            return "failed", t, p.reason or ""
        if p.next is adv.Next.PAUSE:
            return "inconclusive", t, p.reason or ""
        if p.next is adv.Next.SUCCEED:
            return "successful", t, p.reason or ""
        if p.next is adv.Next.NEXT_STAGE:
            stage, ready_at, started = stage + 1, None, now
            continue  # the next tick assigns the next stage's devices
        for d in p.assign:  # simulated devices install and commit within the tick
            members[d] = adv.Member(labels=labels[d], assigned=True, done=True, assigned_at=now)
        ready_at = p.ready_at
        end = now + timedelta(seconds=window_s)
        for dev in fleet:
            on = members[dev.device_id].done
            history.append(_window(rng, dev, runs[variant if on else "production"],
                                   variant if on else "v2", int(window_s * fps), end))  # fmt: skip
        now = end
    return "undecided", (now - T0).total_seconds(), "no decision"


def check_stages(stages: str) -> None:
    """ConfigError (one line) unless ``stages`` is a stage list a rollout spec accepts."""
    from edgefleet.controller.rollouts.spec import RolloutSpec
    from edgefleet.shared.errors import ConfigError
    from pydantic import ValidationError

    try:
        RolloutSpec.model_validate({"model": "m", "version": "v", "stages": stages})
    except ValidationError as e:
        raise ConfigError(f"bad --stages {stages!r}: {e.errors()[0]['msg']}") from None


def bench(
    seeds: int = 5, *, frames_n: int = 60, sites: int = 3, per_site: int = 4,
    stages: str = "25%,50%", soak_s: float = 300.0, window_s: float = 10.0, fps: float = 2.0,
    workdir: Path | None = None, variants: Sequence[Variant] = VARIANTS,
) -> dict[str, Any]:  # fmt: skip
    import tempfile

    with tempfile.TemporaryDirectory(dir=workdir) as tmp_s:
        tmp = Path(tmp_s)
        images = frames(frames_n)
        depth = calibrate_slow(tmp, images) if any(v.name == "3x-slower" for v in variants) else 0
        paths = {"production": SOURCE}
        paths.update({v.name: build(v, tmp, slow_depth=depth) for v in variants})
        runs = infer(paths, images)
    base = runs["production"]
    measured = {}
    for v in variants:
        r = runs[v.name]
        per_class: dict[str, float] = {}
        for dets_b, dets_v in zip(base.detections, r.detections, strict=True):
            for d in dets_v:
                per_class[d.class_name] = per_class.get(d.class_name, 0) + 1
            for d in dets_b:
                per_class.setdefault(d.class_name, 0)
        measured[v.name] = {
            "detections_ratio": sum(map(len, r.detections))
            / max(sum(map(len, base.detections)), 1),
            "confidence_ratio": _mean_conf(r) / max(_mean_conf(base), 1e-9),
            "latency_ratio": float(np.median(r.latency_ms) / np.median(base.latency_ms)),
        }
    rows: list[dict[str, Any]] = []  # one JSON row per variant
    soak_total = soak_s
    for v in variants:
        verdicts, times, reasons = [], [], []
        for seed in range(seeds):
            outcome, t, why = rollout(runs, v.name, seed, sites=sites, per_site=per_site,
                                      stages=stages, soak_s=soak_s, window_s=window_s,
                                      fps=fps)  # fmt: skip
            verdicts.append(outcome)
            times.append(t)
            reasons.append(why)
        failed = sum(o == "failed" for o in verdicts)
        rows.append({
            "variant": v.name, "harmful": v.harmful, "what": v.what,
            "verdicts": verdicts, "seconds": times, "reasons": reasons,
            "false_positives": 0 if v.harmful else failed,
            "false_negatives": seeds - failed if v.harmful else 0,
            "not_passed": 0 if v.harmful else sum(o != "successful" for o in verdicts),
            "max_soaks_to_decision": max(times) / soak_total if times else None,
            **measured[v.name],
        })  # fmt: skip
    return {
        "seeds": seeds, "frames": frames_n, "sites": sites, "devices_per_site": per_site,
        "stages": stages, "soak_s": soak_s, "window_s": window_s, "fps": fps,
        "slow_depth": depth, "rows": rows,
        "false_positives": sum(r["false_positives"] for r in rows),
        "false_negatives": sum(r["false_negatives"] for r in rows),
        "harmless_not_passed": sum(r["not_passed"] for r in rows),
        "max_soaks_to_decision": max(r["max_soaks_to_decision"] for r in rows),
    }  # fmt: skip


def _mean_conf(r: Run) -> float:
    c = [d.confidence for dets in r.detections for d in dets]
    return float(np.mean(c)) if c else 0.0


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['sites']} sites x {result['devices_per_site']} devices, stages "
          f"{result['stages']}, soak {result['soak_s']:g} s, {result['window_s']:g} s windows at "
          f"{result['fps']:g} fps, {result['frames']} frames, {result['seeds']} seeds")  # fmt: skip
    print(f"{'variant':17} {'harm':>4} {'det':>5} {'conf':>5} {'lat':>5}  verdicts per seed"
          f"{'':13} {'FP':>2} {'FN':>2} {'soaks':>5}  first reason")  # fmt: skip
    short = {"failed": "F", "successful": "S", "inconclusive": "I", "undecided": "?"}
    for r in result["rows"]:
        v = "".join(short[o] for o in r["verdicts"])
        why = next((w for o, w in zip(r["verdicts"], r["reasons"], strict=True) if o == "failed"),
                   r["reasons"][0] if r["reasons"] else "")  # fmt: skip
        print(
            f"{r['variant']:17} {'yes' if r['harmful'] else 'no':>4} "
            f"{r['detections_ratio']:5.2f} {r['confidence_ratio']:5.2f} "
            f"{r['latency_ratio']:5.2f}  {v:30} {r['false_positives']:>2} "
            f"{r['false_negatives']:>2} "
            f"{r['max_soaks_to_decision']:5.2f}  {why[:90]}"
        )
    print(f"false positives {result['false_positives']}, false negatives "
          f"{result['false_negatives']}, harmless not passed {result['harmless_not_passed']}, "
          f"slowest decision {result['max_soaks_to_decision']:.2f} soak periods "
          f"(F failed, S successful, I inconclusive)")  # fmt: skip
