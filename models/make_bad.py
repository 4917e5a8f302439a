"""Write models/shapes/bad/model.onnx: the v2 model, made to see worse on purpose.

The class logits get a constant subtracted right before the head's Sigmoid, so every
class confidence drops (0.8 -> 0.6 with the default shift of 1.0) while the boxes, the
output shape, the metadata and the latency stay exactly as they were. It passes ONNX
validation, installs, passes the agent's health check and runs: only canary analysis
(confidence against the control group) can tell it is worse.

    python models/make_bad.py [--source models/shapes/v2/model.onnx] [--shift 1.0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "shapes" / "v2" / "model.onnx"
OUT = HERE / "shapes" / "bad" / "model.onnx"
HEAD_SIGMOID = "/model.23/Sigmoid"  # class scores of the YOLO26 end-to-end head


def make_bad(source: Path, out: Path, shift: float) -> Path:
    model = onnx.load(str(source))
    nodes = list(model.graph.node)
    index = next((i for i, n in enumerate(nodes) if n.name == HEAD_SIGMOID), None)
    if index is None:
        raise SystemExit(f"{source}: no {HEAD_SIGMOID} node (not a YOLO26 end-to-end export?)")
    sigmoid = nodes[index]
    logits = sigmoid.input[0]
    shift_name, shifted = "edgefleet_bad/shift", "edgefleet_bad/shifted_logits"
    model.graph.initializer.append(
        numpy_helper.from_array(np.array(shift, dtype=np.float32), shift_name)
    )
    sub = helper.make_node("Sub", [logits, shift_name], [shifted], name="edgefleet_bad/Sub")
    sigmoid.input[0] = shifted
    model.graph.node.insert(index, sub)
    meta = {p.key: p for p in model.metadata_props}
    meta["description"].value = f"BAD ON PURPOSE: class logits - {shift:g} ({source.parent.name})"
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--shift", type=float, default=1.0, help="logit shift (default 1.0)")
    args = parser.parse_args()
    print(make_bad(args.source, args.out, args.shift))


if __name__ == "__main__":
    main()
