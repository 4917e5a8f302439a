"""Can this agent run a file as a detector? Load it, run it on a probe image, decode it.

The controller asks this at push time (controller/detector_check.py), so the answer is the
agent's own: its ONNX Runtime backend loads the file, and its decoder
(:mod:`.postprocess`) reads the first output. A model fails, with the reason in one line,
when it does not load as a detector, when its output is not a head that decoder reads
(``(1, N, 6)`` end-to-end or ``(1, 4 + nc, anchors)`` raw), when the output holds NaN or
Inf, or when its scores are not in [0, 1]. The decision on the output
(:func:`head_problem`) is pure; :func:`probe_model` does the loading and running around it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgefleet.runtime.backend import ModelInfo
from edgefleet.runtime.postprocess import postprocess
from edgefleet.runtime.preprocess import preprocess
from edgefleet.shared.errors import ArtifactError, EdgefleetError

__all__ = ["ModelInfo", "head_problem", "probe_image", "probe_model"]

PROBE_SHAPE = (480, 640)  # (height, width) of the probe image, a common camera frame
SCORE_SLACK = 1e-3  # scores may pass 1.0 by float rounding, not more


def probe_image(shape: tuple[int, int] = PROBE_SHAPE) -> npt.NDArray[np.uint8]:
    """A fixed BGR picture: a gradient with a few filled shapes, the same on every call."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.stack([xs * 255 // w, ys * 255 // h, (xs + ys) * 255 // (h + w)], axis=-1)
    img = img.astype(np.uint8)
    img[h // 8 : h // 3, w // 8 : w // 3] = (40, 40, 220)
    img[h // 2 : h * 5 // 6, w // 2 : w * 7 // 8] = (220, 160, 30)
    cy, cx, r = h // 3, w * 3 // 4, min(h, w) // 8
    img[(ys - cy) ** 2 + (xs - cx) ** 2 < r * r] = (30, 200, 60)
    return img


def head_problem(info: ModelInfo, output: npt.NDArray[np.float32]) -> str | None:
    """Why the first output of one probe run is not a head the agent decodes, or None."""
    shape = list(output.shape)
    if output.ndim != 3 or shape[0] != 1:
        return f"output shape {shape} is not a detector head (1, N, 6) or (1, 4 + nc, anchors)"
    nc = len(info.names)
    if info.end2end and shape[2] != 6:
        return f"output shape {shape} is not an end-to-end head (1, N, 6)"
    if not info.end2end and shape[1] != 4 + nc:
        return f"output shape {shape} is not a raw head of {nc} classes (1, {4 + nc}, anchors)"
    if not np.isfinite(output).all():
        bad = int(output.size - np.isfinite(output).sum())
        return f"output has {bad} non-finite values (NaN or Inf) on the probe image"
    scores = output[0, :, 4] if info.end2end else output[0, 4:, :]
    if scores.size and (scores.min() < -SCORE_SLACK or scores.max() > 1 + SCORE_SLACK):
        lo, hi = float(scores.min()), float(scores.max())
        return f"scores range from {lo:.3g} to {hi:.3g}, outside [0, 1]: not a detector head"
    return None


def probe_model(path: Path) -> ModelInfo:
    """Load ``path`` as the agent would, run it on the probe image, decode the output.

    Raises :class:`ArtifactError` with the reason; returns what the model says about
    itself when it passes.
    """
    from edgefleet.runtime.onnx_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(intra_op_threads=1)  # one core: pushes are rare, serving is not
    try:
        info = backend.load(path)
        image = probe_image()
        outputs = backend.run(preprocess(image, info.imgsz))
        problem = head_problem(info, outputs[0]) if outputs else "the model has no output"
        if problem is None:
            postprocess(outputs[0], end2end=info.end2end, nc=len(info.names),
                        input_shape=info.imgsz, orig_shape=PROBE_SHAPE,
                        conf=0.25, iou=0.7)  # fmt: skip
    except EdgefleetError as e:
        problem = e.reason
    except (ValueError, IndexError, TypeError) as e:  # numpy, on a head the checks missed
        problem = f"the agent's decoder failed on its output: {type(e).__name__}: {e}"
    finally:
        backend.close()
    if problem is not None:
        reason = problem.replace(str(path), "the upload").replace(path.name, "the upload")
        reason = reason.splitlines()[0]
        raise ArtifactError(f"not a detector the agent can run: {reason}")
    return info
