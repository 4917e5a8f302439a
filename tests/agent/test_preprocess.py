"""Letterbox: same sizes, padding and rounding as Ultralytics' LetterBox."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.runtime.preprocess import (
    PAD_VALUE,
    letterbox,
    letterbox_params,
    preprocess,
    to_tensor,
)


@pytest.mark.parametrize(
    ("shape", "new_shape", "unpad", "tblr"),
    [
        ((480, 320), (160, 160), (107, 160), (0, 0, 26, 27)),  # odd padding: -0.1 / +0.1 split
        ((320, 480), (160, 160), (160, 107), (26, 27, 0, 0)),
        ((160, 160), (160, 160), (160, 160), (0, 0, 0, 0)),
        ((100, 50), (160, 160), (80, 160), (0, 0, 40, 40)),  # scale up
        ((10, 4000), (160, 192), (192, 0 + 1), (79, 80, 0, 0)),  # thin image stays >= 1 px
    ],
)
def test_params_match_hand_computed(shape, new_shape, unpad, tblr):
    p = letterbox_params(shape, new_shape)
    assert p.new_unpad == unpad
    assert (p.top, p.bottom, p.left, p.right) == tblr


def test_letterbox_pads_with_114_and_keeps_content():
    img = np.full((480, 320, 3), 7, dtype=np.uint8)
    out = letterbox(img, (160, 160))
    assert out.shape == (160, 160, 3)
    assert (out[:, :26] == PAD_VALUE).all()
    assert (out[:, 26 + 107 :] == PAD_VALUE).all()
    assert (out[:, 26 : 26 + 107] == 7).all()


def test_tensor_is_rgb_nchw_float32_unit_range():
    img = np.zeros((160, 160, 3), dtype=np.uint8)
    img[..., 0] = 255  # blue in BGR
    t = to_tensor(img)
    assert t.shape == (1, 3, 160, 160)
    assert t.dtype == np.float32
    assert t.flags.c_contiguous
    assert (t[0, 2] == 1.0).all()  # blue is the last RGB channel
    assert (t[0, 0] == 0.0).all()


def test_preprocess_any_size():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(211, 377, 3), dtype=np.uint8)
    t = preprocess(img, (160, 160))
    assert t.shape == (1, 3, 160, 160)
    assert t.min() >= 0.0 and t.max() <= 1.0


@pytest.mark.export
def test_matches_ultralytics_letterbox():
    augment = pytest.importorskip("ultralytics.data.augment", reason="needs ultralytics")
    rng = np.random.default_rng(1)
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(20, 700, size=2))
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        for new_shape in ((160, 160), (192, 256)):
            ref = augment.LetterBox(new_shape, auto=False, stride=32)(image=img)
            np.testing.assert_array_equal(letterbox(img, new_shape), ref)
