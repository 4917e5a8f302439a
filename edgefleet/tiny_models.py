"""Tiny real detectors for the benchmarks and tests: ONNX files the detector check accepts
(an end-to-end head, ``(1, 3, S, S)`` -> ``(1, 300, 6)``) that never detect anything, with
as many bytes of weights as a real model when asked. Not shipped to devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def tiny_onnx(path: Path, size: int = 32, extra: list[Any] | None = None) -> Path:
    """A valid tiny end-to-end detector, ``(1, 3, size, size)`` -> ``(1, 300, 6)`` with no
    box above any threshold, so a push passes the detector check; ``size`` changes the
    bytes (and so the hash); ``extra`` initializers add weight (bytes) to the file."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 300, 6])
    nodes = [  # output0 = zeros + 0 * sum(images): depends on the input, always zero
        helper.make_node("ReduceSum", ["images"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["rows", "z"], ["output0"]),
    ]
    consts = [
        helper.make_tensor("rows", TensorProto.FLOAT, [1, 300, 6], [0.0] * 1800),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    graph = helper.make_graph(nodes, "t", [x], [y], initializer=consts + list(extra or []))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every ONNX Runtime the agent supports reads (1.23 on JetPack)
    helper.set_model_props(model, {"names": "{0: 'thing'}", "task": "detect"})
    onnx.save(model, str(path))
    return path


def big_onnx(path: Path, n_bytes: int) -> Path:
    """A valid tiny detector carrying ``n_bytes`` of weights (the size of a real detector)."""
    from onnx import numpy_helper

    weights = np.random.default_rng(0).random(n_bytes // 4, dtype=np.float32)
    return tiny_onnx(path, extra=[numpy_helper.from_array(weights, "weights")])
