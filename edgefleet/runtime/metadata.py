"""Read what an Ultralytics ONNX export says about itself (its ``metadata_props``).

The exporter stores values as Python literals (``names`` is a dict repr, ``imgsz`` a list);
they are parsed with :func:`ast.literal_eval`, never ``eval``. Whether the graph is
end-to-end is decided from the output shape, which cannot lie, with the metadata as a hint.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence

from edgefleet.runtime.backend import ModelInfo
from edgefleet.shared.errors import ArtifactError

KNOWN_KEYS = {"imgsz", "names", "stride", "task", "end2end"}


def _literal(props: Mapping[str, str], key: str) -> object:
    try:
        return ast.literal_eval(props[key])
    except (ValueError, SyntaxError) as e:
        raise ArtifactError(f"model metadata {key!r} is not readable: {props[key][:60]!r}") from e


def _imgsz(props: Mapping[str, str], input_shape: Sequence[object]) -> tuple[int, int]:
    if len(input_shape) != 4:
        raise ArtifactError(f"model input shape {list(input_shape)} is not an image (1, 3, H, W)")
    dims = list(input_shape[2:4])
    if all(isinstance(d, int) and d > 0 for d in dims):
        return int(dims[0]), int(dims[1])  # type: ignore[call-overload]
    if "imgsz" in props:
        v = _literal(props, "imgsz")
        if isinstance(v, int):
            return v, v
        if isinstance(v, (list, tuple)) and len(v) == 2:
            return int(v[0]), int(v[1])
    raise ArtifactError("model input size is dynamic and the metadata gives no imgsz")


def _names(props: Mapping[str, str], nc: int | None) -> dict[int, str]:
    if "names" in props:
        v = _literal(props, "names")
        if isinstance(v, dict):
            return {int(k): str(n) for k, n in v.items()}
        if isinstance(v, (list, tuple)):
            return dict(enumerate(str(n) for n in v))
    if nc is None:
        raise ArtifactError("model metadata has no class names and the output does not say nc")
    return {i: f"class{i}" for i in range(nc)}


def is_end2end_output(output_shape: Sequence[object], nc: int) -> bool:
    """(1, max_det, 6) rather than (1, 4 + nc, anchors)."""
    if len(output_shape) != 3:
        raise ArtifactError(f"unsupported detection output shape {list(output_shape)}")
    last, mid = output_shape[2], output_shape[1]
    return last == 6 and mid != 4 + nc


def model_info(
    props: Mapping[str, str], input_shape: Sequence[object], output_shape: Sequence[object]
) -> ModelInfo:
    """Build :class:`ModelInfo` from metadata and the graph's first input / output shapes."""
    task = props.get("task", "detect")
    if task != "detect":
        raise ArtifactError(f"model task is {task!r}; only 'detect' is supported")
    mid = output_shape[1] if len(output_shape) == 3 else None
    nc_hint = mid - 4 if isinstance(mid, int) and output_shape[2] != 6 else None
    names = _names(props, nc_hint)
    stride = int(props["stride"]) if props.get("stride", "").isdigit() else 32
    return ModelInfo(
        imgsz=_imgsz(props, input_shape),
        names=names,
        stride=stride,
        end2end=is_end2end_output(output_shape, len(names)),
        task=task,
        extra={k: v for k, v in props.items() if k not in KNOWN_KEYS},
    )


def info_document(info: ModelInfo) -> dict[str, object]:
    """ModelInfo as JSON: beside a TensorRT plan, and in a plan's signed target."""
    return {
        "imgsz": list(info.imgsz),
        "names": {str(k): v for k, v in info.names.items()},
        "stride": info.stride,
        "end2end": info.end2end,
        "task": info.task,
    }


def info_from_document(doc: object) -> ModelInfo:
    """The inverse of :func:`info_document`; ArtifactError for anything malformed."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("names"), Mapping):
        raise ArtifactError("unreadable model info: not an object with class names")
    names = doc["names"]
    try:
        h, w = doc["imgsz"]
        info = ModelInfo(
            imgsz=(int(h), int(w)),
            names={int(k): str(v) for k, v in names.items()},
            stride=int(doc["stride"]),
            end2end=bool(doc["end2end"]),
            task=str(doc["task"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"unreadable model info: {type(e).__name__} {e}") from e
    if not info.names or min(info.imgsz) <= 0 or info.task != "detect":
        raise ArtifactError(f"unusable model info: imgsz {info.imgsz}, task {info.task!r}")
    return info
