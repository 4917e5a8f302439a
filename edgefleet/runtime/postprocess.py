"""Decode raw model outputs into detections in original-image pixels, like Ultralytics.

Two output kinds:

* end-to-end (YOLO26 exported with ``nms=False``): ``(1, 300, 6)`` rows of
  ``x1, y1, x2, y2, score, class`` already de-duplicated; only the confidence filter applies.
* classic raw head: ``(1, 4 + nc, anchors)`` rows of ``cx, cy, w, h, class scores...``;
  best class per anchor, confidence filter, class-aware NMS.

Both mirror ``ultralytics.utils.nms.non_max_suppression`` (agnostic=False,
multi_label=False) and ``ultralytics.utils.ops.scale_boxes``; pure numpy, no torch.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgefleet.runtime.preprocess import letterbox_params

MAX_WH = 7680  # per-class box offset in pixels (Ultralytics' max_wh) for class-aware NMS
MAX_NMS = 30000  # boxes kept by confidence before NMS
MAX_DET = 300

F32 = npt.NDArray[np.float32]


def decode_end2end(pred: F32, conf: float, max_det: int = MAX_DET) -> F32:
    """``pred`` (N, 6) of one image -> rows with score > conf, in model order."""
    keep = pred[:, 4] > conf
    return pred[keep][:max_det].astype(np.float32, copy=False)


def xywh2xyxy(xywh: F32) -> F32:
    out = np.empty_like(xywh)
    half = xywh[:, 2:] / 2
    out[:, :2] = xywh[:, :2] - half
    out[:, 2:] = xywh[:, :2] + half
    return out


def iou_one_to_many(box: F32, boxes: F32) -> F32:
    """IoU of one xyxy box against (N, 4) xyxy boxes."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / (area + areas - inter), dtype=np.float32)


def nms(boxes: F32, scores: F32, iou_threshold: float) -> npt.NDArray[np.int64]:
    """Greedy NMS as torchvision.ops.nms: indices kept, by descending score; a box is
    dropped when its IoU with a kept box is above the threshold."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        order = rest[iou_one_to_many(boxes[i], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_classic(pred: F32, conf: float, iou: float, nc: int, max_det: int = MAX_DET) -> F32:
    """``pred`` (4 + nc, anchors) of one image -> (K, 6) rows xyxy, score, class after NMS."""
    x = pred.T[:, : 4 + nc]
    cls_scores = x[:, 4:]
    best = cls_scores.max(axis=1)
    x = x[best > conf]
    if not x.shape[0]:
        return np.zeros((0, 6), dtype=np.float32)
    scores = x[:, 4:].max(axis=1)
    classes = x[:, 4:].argmax(axis=1).astype(np.float32)
    rows = np.concatenate([xywh2xyxy(x[:, :4]), scores[:, None], classes[:, None]], axis=1)
    if rows.shape[0] > MAX_NMS:
        rows = rows[np.argsort(-rows[:, 4], kind="stable")[:MAX_NMS]]
    offset_boxes = rows[:, :4] + rows[:, 5:6] * np.float32(MAX_WH)
    keep = nms(offset_boxes, rows[:, 4], iou)[:max_det]
    return np.asarray(rows[keep], dtype=np.float32)


def scale_boxes(boxes: F32, input_shape: tuple[int, int], orig_shape: tuple[int, int]) -> F32:
    """Letterboxed-input xyxy -> original-image xyxy, clipped; shapes are (height, width)."""
    p = letterbox_params(orig_shape, input_shape)
    gain_x = np.float32(p.new_unpad[0] / orig_shape[1])
    gain_y = np.float32(p.new_unpad[1] / orig_shape[0])
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - np.float32(p.left)) / gain_x
    out[:, [1, 3]] = (out[:, [1, 3]] - np.float32(p.top)) / gain_y
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, orig_shape[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, orig_shape[0])
    return out


def postprocess(
    output: F32,
    *,
    end2end: bool,
    nc: int,
    input_shape: tuple[int, int],
    orig_shape: tuple[int, int],
    conf: float,
    iou: float,
) -> F32:
    """First model output of one image -> (K, 6) rows in original-image pixels."""
    pred = output[0]
    rows = decode_end2end(pred, conf) if end2end else decode_classic(pred, conf, iou, nc)
    if rows.shape[0]:
        rows[:, :4] = scale_boxes(rows[:, :4], input_shape, orig_shape)
    return rows
