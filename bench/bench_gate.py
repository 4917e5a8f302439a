"""How noisy is the validation gate's mAP50 on a finite set, and does its bootstrap say so?

Draws ``--sets`` independent synthetic validation sets of ``--images`` labelled images
(models/make_dataset.py, one seed each), runs the shipped v2, a v2 that never detects
triangles (models/make_bad.py ``blind``) and v2 with every class logit lowered by 1
(``shift``: the same ranking, so the same mAP50) on each, exactly as the gate does
(controller/validation_run.py), and prints per set: the mAP50s, the paired drop
v2 - blind with its 90 % bootstrap interval (controller/validation_gate.py), and at the
end the spread of v2's mAP50 and of the drop across sets next to the intervals' width.

    python bench/bench_gate.py [--sets 4] [--images 200] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from edgefleet.controller.validation_gate import Evaluation, regression_interval
from edgefleet.controller.validation_run import evaluate

REPO = Path(__file__).resolve().parents[1]
V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _one_set(tmp: Path, seed: int, images: int, models: dict[str, Path]) -> dict[str, Any]:
    root = tmp / f"set{seed}"
    _module(REPO / "models" / "make_dataset.py").generate(root, 0, images, seed=seed)
    evs: dict[str, Evaluation] = {
        name: evaluate(path, root, name, f"seed{seed}") for name, path in models.items()
    }
    v2, blind, shift = evs["v2"], evs["blind"], evs["shift"]
    return {
        "seed": seed,
        "map50": {k: e.map50 for k, e in evs.items()},
        "drop_blind": (v2.map50 or 0.0) - (blind.map50 or 0.0),
        "interval_blind": regression_interval(v2, blind),
        "drop_shift": (v2.map50 or 0.0) - (shift.map50 or 0.0),
        "interval_shift": regression_interval(v2, shift),
        "latency_p50_ms": {k: e.latency_p50_ms for k, e in evs.items()},
    }


def run(sets: int, images: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as t:
        tmp = Path(t)
        bad = _module(REPO / "models" / "make_bad.py")
        models = {
            "v2": V2,
            "blind": bad.make_blind(V2, tmp / "blind.onnx", 2),
            "shift": bad.make_bad(V2, tmp / "shift.onnx", 1.0),
        }
        rows = [_one_set(tmp, 100 + i, images, models) for i in range(sets)]
    v2 = [float(r["map50"]["v2"]) for r in rows]
    drops = [float(r["drop_blind"]) for r in rows]
    widths = [r["interval_blind"][1] - r["interval_blind"][0] for r in rows if r["interval_blind"]]
    return {
        "images": images,
        "sets": rows,
        "v2_map50_sd": statistics.stdev(v2) if len(v2) > 1 else None,
        "drop_sd": statistics.stdev(drops) if len(drops) > 1 else None,
        "mean_interval_width": statistics.fmean(widths) if widths else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=4)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = run(args.sets, args.images)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for r in out["sets"]:
        m = r["map50"]
        print(f"set {r['seed']}: mAP50 v2 {m['v2']:.3f} blind {m['blind']:.3f} shift "
              f"{m['shift']:.3f}; drop v2-blind {r['drop_blind']:.3f} 90% "
              f"{r['interval_blind']}; drop v2-shift {r['drop_shift']:.4f} "
              f"{r['interval_shift']}; median ms {r['latency_p50_ms']}")  # fmt: skip
    print(f"{args.images} images per set: SD of v2's mAP50 across sets {out['v2_map50_sd']}, "
          f"SD of the drop {out['drop_sd']}, mean 90% interval width "
          f"{out['mean_interval_width']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
