"""Two ONNX files compared canonically: what differs between them, by name.

Ultralytics writes the export time into the model's metadata (``date``), so two exports
of the same weights with the same arguments never have the same sha256. The canonical
digest is the sha256 of the model serialized deterministically without those volatile
entries; :func:`differences` names what else differs: header fields (IR version,
producer), opsets, metadata entries, graph inputs and outputs, nodes, initializers.
Needs the ``onnx`` package (the controller and export extras have it).
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgefleet.shared.errors import ArtifactError, ConfigError

VOLATILE_METADATA = frozenset({"date"})  # written anew by every Ultralytics export
HEADER_FIELDS = ("ir_version", "producer_name", "producer_version", "domain", "model_version")
SHOWN = 10  # names listed per kind of difference


def load(path: Path) -> Any:
    try:
        import onnx
    except ImportError as e:
        raise ConfigError("comparing ONNX files needs the onnx package") from e
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and others
        raise ArtifactError(f"{path.name} is not a readable ONNX model: {e}") from e


def canonical_digest(model: Any) -> str:
    """sha256 of ``model`` without volatile metadata, serialized deterministically."""
    copy = type(model)()
    copy.CopyFrom(model)
    keep = [p for p in copy.metadata_props if p.key not in VOLATILE_METADATA]
    del copy.metadata_props[:]
    copy.metadata_props.extend(keep)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def differences(a: Any, b: Any) -> list[str]:
    """What differs from model ``a`` to ``b``, one line each; volatile metadata last."""
    out = [f"{f}: {getattr(a, f)!r} -> {getattr(b, f)!r}"
           for f in HEADER_FIELDS if getattr(a, f) != getattr(b, f)]  # fmt: skip
    out += _mapping("opset", _opsets(a), _opsets(b))
    meta_a, meta_b = _metadata(a), _metadata(b)
    out += [_detail(line, meta_a, meta_b) for line in _mapping("metadata", _drop(meta_a),
                                                               _drop(meta_b))]  # fmt: skip
    out += _mapping("graph input", _values(a.graph.input), _values(b.graph.input))
    out += _mapping("graph output", _values(a.graph.output), _values(b.graph.output))
    out += _nodes(a.graph.node, b.graph.node)
    out += _initializers(a.graph.initializer, b.graph.initializer)
    vol = (
        {k: meta_a.get(k) for k in VOLATILE_METADATA},
        {k: meta_b.get(k) for k in VOLATILE_METADATA},
    )
    out += [f"{line} (volatile: ignored)" for line in _mapping("metadata", *vol)]
    return out


def _opsets(model: Any) -> dict[str, Any]:
    return {o.domain or "ai.onnx": o.version for o in model.opset_import}


def _metadata(model: Any) -> dict[str, Any]:
    return {p.key: p.value for p in model.metadata_props}


def _drop(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in VOLATILE_METADATA}


def _values(infos: Iterable[Any]) -> dict[str, str]:
    """A graph input or output: its element type and shape (``1x3x160x160``, ``?`` dims)."""
    out = {}
    for info in infos:
        t = info.type.tensor_type
        dims = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                        for d in t.shape.dim)  # fmt: skip
        out[info.name] = f"type {t.elem_type} shape {dims}"
    return out


def _mapping(what: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            out.append(f"{what} {key}: removed ({_short(a[key])})")
        elif key not in a:
            out.append(f"{what} {key}: added ({_short(b[key])})")
        elif a[key] != b[key]:
            out.append(f"{what} {key}: {_short(a[key])} -> {_short(b[key])}")
    return out


def _detail(line: str, a: Mapping[str, str], b: Mapping[str, str]) -> str:
    """A metadata entry that holds a dict (Ultralytics' ``args``): the keys that differ."""
    key = line.split(":", 1)[0].removeprefix("metadata ")
    x, y = _literal(a.get(key)), _literal(b.get(key))
    if not isinstance(x, dict) or not isinstance(y, dict):
        return line
    changed = [f"{k} {x.get(k)!r} -> {y.get(k)!r}" for k in sorted(set(x) | set(y), key=str)
               if x.get(k) != y.get(k)]  # fmt: skip
    return f"metadata {key}: " + ", ".join(changed)


def _literal(text: str | None) -> object:
    try:
        return ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _short(value: object, width: int = 80) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _node_key(node: Any) -> tuple[str, str]:
    return node.op_type, node.SerializeToString(deterministic=True).hex()


def _nodes(a: Iterable[Any], b: Iterable[Any]) -> list[str]:
    """Nodes compared as a multiset: op types added or removed, and how many nodes of the
    same op differ in inputs, outputs or attributes."""
    list_a, list_b = list(a), list(b)
    ops_a, ops_b = Counter(n.op_type for n in list_a), Counter(n.op_type for n in list_b)
    out = []
    if len(list_a) != len(list_b):
        out.append(f"nodes: {len(list_a)} -> {len(list_b)}")
    for op in sorted(set(ops_a) | set(ops_b)):
        if ops_a[op] != ops_b[op]:
            out.append(f"node {op}: {ops_a[op]} -> {ops_b[op]}")
    only_a = Counter(map(_node_key, list_a)) - Counter(map(_node_key, list_b))
    changed = Counter(op for op, _ in only_a.elements())
    for op, count in sorted(changed.items()):
        if ops_a[op] == ops_b[op]:
            out.append(f"node {op}: {count} of {ops_a[op]} differ (inputs, outputs or attributes)")
    return out


def _initializers(a: Iterable[Any], b: Iterable[Any]) -> list[str]:
    """Weights by name: added, removed, another dtype or shape, other values (max |a-b|)."""
    from onnx import numpy_helper

    tensors_a, tensors_b = {t.name: t for t in a}, {t.name: t for t in b}
    out = []
    for kind, names in (("removed", set(tensors_a) - set(tensors_b)),
                        ("added", set(tensors_b) - set(tensors_a))):  # fmt: skip
        if names:
            out.append(f"initializers {kind}: {len(names)} ({_names(names)})")
    differ = []
    for name in sorted(set(tensors_a) & set(tensors_b)):
        x, y = numpy_helper.to_array(tensors_a[name]), numpy_helper.to_array(tensors_b[name])
        if x.dtype != y.dtype or x.shape != y.shape:
            out.append(f"initializer {name}: {x.dtype}{list(x.shape)} -> {y.dtype}{list(y.shape)}")
        elif x.tobytes() != y.tobytes():
            gap = float(abs(x.astype("float64") - y.astype("float64")).max()) if x.size else 0.0
            differ.append(f"{name} (max |diff| {gap:.3g})")
    if differ:
        out.append(f"initializers with other values: {len(differ)} ({_names(differ)})")
    return out


def _names(names: Iterable[str]) -> str:
    shown = sorted(names)
    more = f", ... {len(shown) - SHOWN} more" if len(shown) > SHOWN else ""
    return ", ".join(shown[:SHOWN]) + more
