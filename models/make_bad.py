"""Write models/shapes/bad/model.onnx: the v2 model, made to see worse on purpose.

The class logits get a constant subtracted right before the head's Sigmoid, so every
class confidence drops (0.8 -> 0.6 with the default shift of 1.0) while the boxes, the
output shape, the metadata and the latency stay exactly as they were. It passes ONNX
validation, installs, passes the agent's health check and runs: only canary analysis
(confidence against the control group) can tell it is worse.

    python models/make_bad.py [--source models/shapes/v2/model.onnx] [--shift 1.0]

``--kind blind --class-id 2 --out FILE``: v2 that never detects one class (triangle), the
kind of version the validation gate must refuse (lower mAP50, one class's AP50 at zero).

Other kinds are models the controller must refuse at push (controller/detector_check.py),
written to ``--out`` (required for them):

    python models/make_bad.py --kind nan --out /tmp/nan.onnx         # v2 with a NaN head
    python models/make_bad.py --kind classifier --out /tmp/cls.onnx  # a 10-class classifier
    python models/make_bad.py --kind identity --out /tmp/id.onnx     # a 1x10 Identity
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "shapes" / "v2" / "model.onnx"
OUT = HERE / "shapes" / "bad" / "model.onnx"
HEAD_SIGMOID = "/model.23/Sigmoid"  # class scores of the YOLO26 end-to-end head
KINDS = ("shift", "blind", "nan", "classifier", "identity")


def make_bad(source: Path, out: Path, shift: float) -> Path:
    what = f"BAD ON PURPOSE: class logits - {shift:g} ({source.parent.name})"
    return _shift_logits(source, out, np.array(shift, dtype=np.float32), what)


def make_blind(source: Path, out: Path, class_id: int) -> Path:
    """The detector made blind to one class: that class's logits lowered by 30 (its scores
    fall below 1e-12) and nothing else changed, so it never detects that class while the
    other classes score exactly as before: what the validation gate's per-class check
    refuses (controller/validation_gate.py)."""
    shift = np.zeros((1, _class_count(source), 1), dtype=np.float32)
    shift[0, class_id, 0] = 30.0
    what = f"BAD ON PURPOSE: never detects class {class_id} ({source.parent.name})"
    return _shift_logits(source, out, shift, what)


def _class_count(source: Path) -> int:
    meta = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
    return len(ast.literal_eval(meta["names"]))


def _shift_logits(source: Path, out: Path, shift: np.ndarray, description: str) -> Path:
    """Subtract ``shift`` (broadcast over the head's (1, classes, anchors) logits) right
    before the head's Sigmoid."""
    model = onnx.load(str(source))
    nodes = list(model.graph.node)
    index = next((i for i, n in enumerate(nodes) if n.name == HEAD_SIGMOID), None)
    if index is None:
        raise SystemExit(f"{source}: no {HEAD_SIGMOID} node (not a YOLO26 end-to-end export?)")
    sigmoid = nodes[index]
    logits = sigmoid.input[0]
    shift_name, shifted = "edgefleet_bad/shift", "edgefleet_bad/shifted_logits"
    model.graph.initializer.append(numpy_helper.from_array(shift, shift_name))
    sub = helper.make_node("Sub", [logits, shift_name], [shifted], name="edgefleet_bad/Sub")
    sigmoid.input[0] = shifted
    model.graph.node.insert(index, sub)
    meta = {p.key: p for p in model.metadata_props}
    meta["description"].value = description
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def make_nan(source: Path, out: Path) -> Path:
    """The detector with its first output multiplied by NaN: loads and runs, outputs NaN."""
    model = onnx.load(str(source))
    head = model.graph.output[0].name
    raw = "edgefleet_bad/raw_head"
    for node in model.graph.node:
        node.output[:] = [raw if o == head else o for o in node.output]
    nan = numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "edgefleet_bad/nan")
    model.graph.initializer.append(nan)
    model.graph.node.append(
        helper.make_node("Mul", [raw, nan.name], [head], name="edgefleet_bad/Mul")
    )
    return _save(model, out)


def make_classifier(out: Path, classes: int = 10, imgsz: int = 224) -> Path:
    """An image classifier (1, 3, H, W) -> (1, classes) softmax, as Ultralytics exports one."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((classes, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, [1, classes])],
        initializer=[w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    names = {i: f"class{i}" for i in range(classes)}
    helper.set_model_props(
        model, {"task": "classify", "names": repr(names), "imgsz": f"[{imgsz}, {imgsz}]"}
    )
    return _save(model, out)


def make_identity(out: Path, width: int = 10) -> Path:
    """A 1 x ``width`` Identity: valid ONNX, nothing like an image model."""
    x = helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, width])
    y = helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, [1, width])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])], "id", [x], [y]
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out)


def _save(model: onnx.ModelProto, out: Path) -> Path:
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--shift", type=float, default=1.0, help="logit shift (default 1.0)")
    parser.add_argument("--class-id", type=int, default=2, help="--kind blind: the class never "
                        "detected (default 2, triangle)")  # fmt: skip
    what = "shift (default): worse on purpose; the others must be refused at push"
    parser.add_argument("--kind", choices=KINDS, default="shift", help=what)
    args = parser.parse_args()
    if args.kind != "shift" and args.out == OUT:
        parser.error(f"--kind {args.kind} needs --out (models/shapes/bad is the shift model)")
    if args.kind == "shift":
        print(make_bad(args.source, args.out, args.shift))
    elif args.kind == "blind":
        print(make_blind(args.source, args.out, args.class_id))
    elif args.kind == "nan":
        print(make_nan(args.source, args.out))
    elif args.kind == "classifier":
        print(make_classifier(args.out))
    else:
        print(make_identity(args.out))


if __name__ == "__main__":
    main()
