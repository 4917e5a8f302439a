"""Decoding and NMS, against brute-force references and hand-built outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.runtime.postprocess import (
    decode_classic,
    decode_end2end,
    nms,
    postprocess,
    scale_boxes,
)
from edgefleet.runtime.preprocess import letterbox_params


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _brute_nms(boxes, scores, thr):
    keep = []
    for i in sorted(range(len(scores)), key=lambda k: -scores[k]):
        if all(_iou(boxes[i], boxes[j]) <= thr for j in keep):
            keep.append(i)
    return keep


def _random_boxes(rng, n):
    xy = rng.uniform(0, 200, size=(n, 2))
    wh = rng.uniform(5, 80, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_brute_force(seed, thr):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 150)
    scores = rng.permutation(150).astype(np.float32) / 150  # distinct scores: order is defined
    assert nms(boxes, scores, thr).tolist() == _brute_nms(boxes.tolist(), scores.tolist(), thr)


def test_nms_empty_and_single():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).size == 0
    one = np.array([[0, 0, 10, 10]], np.float32)
    assert nms(one, np.array([0.9], np.float32), 0.5).tolist() == [0]


def _raw_head(rows, nc, anchors=20):
    """rows: (cx, cy, w, h, cls, score); other anchors get score 0."""
    out = np.zeros((4 + nc, anchors), np.float32)
    for k, (cx, cy, w, h, c, s) in enumerate(rows):
        out[:4, k] = (cx, cy, w, h)
        out[4 + c, k] = s
    return out


def test_classic_nms_is_class_aware():
    pred = _raw_head(
        [(50, 50, 20, 20, 0, 0.9), (51, 50, 20, 20, 0, 0.8), (51, 50, 20, 20, 1, 0.7)], nc=3
    )
    rows = decode_classic(pred, conf=0.25, iou=0.7, nc=3)
    assert rows[:, 5].tolist() == [0.0, 1.0]  # the class-0 duplicate is gone, class 1 stays
    np.testing.assert_allclose(rows[0, :4], [40, 40, 60, 60])
    assert rows[:, 4].tolist() == pytest.approx([0.9, 0.7])


def test_classic_conf_is_strictly_greater():
    pred = _raw_head([(50, 50, 20, 20, 0, 0.25), (150, 50, 20, 20, 1, 0.26)], nc=2)
    rows = decode_classic(pred, conf=0.25, iou=0.7, nc=2)
    assert rows[:, 5].tolist() == [1.0]


def test_classic_max_det():
    rows = [(10 + 30 * (k % 10), 10 + 30 * (k // 10), 10, 10, 0, 0.5 + k / 1000) for k in range(50)]
    pred = _raw_head(rows, nc=1, anchors=60)
    assert decode_classic(pred, 0.25, 0.7, nc=1, max_det=7).shape == (7, 6)


def test_end2end_filter_keeps_model_order():
    pred = np.array(
        [[0, 0, 5, 5, 0.9, 1], [0, 0, 5, 5, 0.2, 0], [1, 1, 6, 6, 0.3, 2], [0, 0, 1, 1, 0.25, 0]],
        np.float32,
    )
    rows = decode_end2end(pred, 0.25)
    assert rows[:, 4].tolist() == pytest.approx([0.9, 0.3])


def test_scale_boxes_inverts_letterbox():
    orig, inp = (480, 320), (160, 160)
    p = letterbox_params(orig, inp)
    gx, gy = p.new_unpad[0] / orig[1], p.new_unpad[1] / orig[0]
    box = np.array([[30.0, 60.0, 200.0, 400.0]], np.float32)
    fwd = box * np.array([gx, gy, gx, gy], np.float32) + np.array(
        [p.left, p.top, p.left, p.top], np.float32
    )
    np.testing.assert_allclose(scale_boxes(fwd, inp, orig), box, atol=1e-3)


def test_scale_boxes_clips_to_image():
    out = scale_boxes(np.array([[-10, -10, 500, 500]], np.float32), (160, 160), (480, 320))
    assert out.tolist() == [[0, 0, 320, 480]]


def test_postprocess_end2end_scales_back():
    out = np.zeros((1, 300, 6), np.float32)
    out[0, 0] = (26, 0, 133, 160, 0.8, 3)  # the whole letterboxed content
    rows = postprocess(
        out, end2end=True, nc=5, input_shape=(160, 160), orig_shape=(480, 320), conf=0.25, iou=0.7
    )
    assert rows.shape == (1, 6)
    np.testing.assert_allclose(rows[0, :4], [0, 0, 320, 480], atol=1e-3)


@pytest.mark.export
def test_classic_matches_ultralytics_nms():
    torch = pytest.importorskip("torch", reason="needs torch")
    nms_mod = pytest.importorskip("ultralytics.utils.nms", reason="needs ultralytics")
    rng = np.random.default_rng(3)
    nc, n = 5, 800
    xy = rng.uniform(0, 160, size=(2, n))
    wh = rng.uniform(4, 60, size=(2, n))
    scores = rng.uniform(0, 1, size=(nc, n)) ** 4
    pred = np.concatenate([xy, wh, scores]).astype(np.float32)
    (ref,) = nms_mod.non_max_suppression(torch.from_numpy(pred[None]), 0.25, 0.7, max_det=300)
    ours = decode_classic(pred, 0.25, 0.7, nc=nc)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6, atol=1e-4)
