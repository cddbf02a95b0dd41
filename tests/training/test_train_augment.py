"""Augmentation keeps frame, flow, mask and expression aligned; the torch dataset is deterministic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from models.config import build_config
from models.tokenizer import Tokenizer
from training.sample import VOID, Sample
from training.torch_data import (
    AugmentConfig,
    ReferringTorchDataset,
    augment,
    flow_to_grid,
    swap_left_right,
)

NO_COLOUR = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0}


def _moving_square(h=96, w=128, box=(30, 50, 40, 64), d=(3.0, -2.0)):
    """A red square on grey, its mask, and a flow field that is ``d`` on the square, 0 elsewhere."""
    y0, y1, x0, x1 = box
    frame = np.full((h, w, 3), 90, np.uint8)
    frame[y0:y1, x0:x1] = (0, 0, 230)  # BGR red
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 1
    flow = np.zeros((h, w, 2), np.float32)
    flow[y0:y1, x0:x1] = d
    return frame, flow, mask


def test_swap_left_right():
    assert swap_left_right("the square moving left") == "the square moving right"
    assert swap_left_right("right of the leftmost car") == "left of the rightmost car"
    assert swap_left_right("the bright star going leftwards") == "the bright star going rightwards"


def test_flow_to_grid_rescales_vectors():
    flow = np.zeros((10, 20, 2), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, -1.0
    out = flow_to_grid(flow, (40, 30))  # H x4, W x1.5
    assert out.shape == (40, 30, 2)
    np.testing.assert_allclose(out[..., 0], 3.0, rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], -4.0, rtol=1e-6)


def test_flip_negates_dx_flips_mask_and_swaps_words():
    frame, flow, mask = _moving_square()
    cfg = AugmentConfig(hflip=1.0, scale=(1.0, 1.0), **NO_COLOUR)
    out = augment(
        frame, flow, mask, "the square moving left",
        out_size=(96, 128), rng=np.random.default_rng(0), config=cfg,
    )  # fmt: skip
    assert out.flipped and out.expression == "the square moving right"
    np.testing.assert_array_equal(out.mask, mask[:, ::-1])
    np.testing.assert_array_equal(out.frame, frame[:, ::-1])
    np.testing.assert_allclose(out.flow[..., 0], -flow[:, ::-1, 0])
    np.testing.assert_allclose(out.flow[..., 1], flow[:, ::-1, 1])


def test_scale_crop_flip_keep_moving_square_consistent():
    frame, flow, mask = _moving_square()
    cfg = AugmentConfig(hflip=1.0, scale=(1.6, 1.6), **NO_COLOUR)
    out = augment(
        frame, flow, mask, "the red square moving right",
        out_size=(64, 64), rng=np.random.default_rng(3), config=cfg,
    )  # fmt: skip
    assert out.frame.shape == (64, 64, 3) and out.flow.shape == (64, 64, 2)
    assert out.mask.shape == (64, 64) and out.expression == "the red square moving left"
    obj = out.mask == 1
    assert obj.sum() > 50
    # The mask still covers exactly the red pixels (up to resampling at the edge).
    red = (out.frame[..., 2] > 200) & (out.frame[..., 1] < 40)
    assert (obj & red).sum() / (obj | red).sum() > 0.9
    # Flow on the object: window 96/1.6 x 128/1.6 = 60 x 80 resized to 64 x 64, then mirrored.
    sx, sy = 64 / 80, 64 / 60
    kernel = np.ones((5, 5), np.uint8)
    inner = cv2.erode(obj.astype(np.uint8), kernel).astype(bool)
    np.testing.assert_allclose(out.flow[inner, 0], -3.0 * sx, rtol=1e-4)
    np.testing.assert_allclose(out.flow[inner, 1], -2.0 * sy, rtol=1e-4)
    far = ~cv2.dilate(obj.astype(np.uint8), kernel).astype(bool)
    assert inner.sum() > 20 and far.sum() > 2000
    np.testing.assert_allclose(out.flow[far], 0.0, atol=1e-6)


def test_colour_jitter_changes_only_the_frame():
    frame, flow, mask = _moving_square(h=64, w=64, box=(10, 30, 20, 40))
    cfg = AugmentConfig(hflip=0.0, scale=(1.0, 1.0), brightness=0.5, contrast=0.5, saturation=0.5)
    out = augment(
        frame, flow, mask, "the red square",
        out_size=(64, 64), rng=np.random.default_rng(1), config=cfg,
    )  # fmt: skip
    assert not np.array_equal(out.frame, frame)
    np.testing.assert_array_equal(out.mask, mask)
    np.testing.assert_array_equal(out.flow, flow)
    assert out.expression == "the red square"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hflip": 1.5}, "hflip"),
        ({"scale": (0.5, 1.0)}, "scale"),
        ({"brightness": 1.0}, "brightness"),
    ],
)
def test_bad_augment_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


def test_augment_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown augment keys.*valid"):
        AugmentConfig.from_dict({"hue": 0.1})


@pytest.fixture(scope="module")
def square_samples():
    out = []
    for i, (d, phrase) in enumerate(
        [((3.0, 0.0), "the square moving right"), ((0.0, 0.0), "a static square")]
    ):
        frame, flow, mask = _moving_square(d=d)
        mask[0, :4] = VOID
        out.append(
            Sample(
                frame=frame, prev_frame=None, flow=flow, expression=phrase, mask=mask,
                dataset="unit", video_id=f"v{i}", frame_index=1, object_id="1", split="unit",
            )
        )  # fmt: skip
    return out


def test_torch_dataset_items_and_determinism(square_samples):
    cfg = build_config("hinet_tiny", input_size=(64, 64))
    tok = Tokenizer.train(
        [s.expression for s in square_samples] * 4, vocab_size=32, model_type="bpe"
    )
    ds = ReferringTorchDataset(
        square_samples, tokenizer=tok, config=cfg, augment=AugmentConfig(), seed=7
    )
    a, b = ds[0], ds[0]
    assert a["image"].shape == (3, 64, 64) and a["image"].dtype == torch.float32
    assert a["flow"].shape == (2, 64, 64)
    assert a["token_ids"].shape == (cfg.text.max_tokens,) and a["token_ids"].dtype == torch.int64
    assert a["target"].shape == (1, 64, 64) and set(a["target"].unique().tolist()) == {0.0, 1.0}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    draws = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.append(ds[0]["image"])
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    # Without augmentation: exactly the deployment preprocessing, void pixels marked invalid.
    plain = ReferringTorchDataset(square_samples, tokenizer=tok, config=cfg, augment=None)
    item = plain[0]
    assert item["valid"].min() == 0.0 and item["valid"].sum() < 64 * 64
    # Flow 3 px on a 128-wide grid, gain 20 -> 3 / 128 * 20 on the object.
    on_obj = item["target"][0] > 0
    flow_x = item["flow"][0][on_obj]
    assert torch.allclose(flow_x.median(), torch.tensor(3.0 / 128 * cfg.flow_gain), rtol=1e-4)


def test_torch_dataset_rejects_too_long_phrase(square_samples):
    cfg = build_config("hinet_tiny", input_size=(64, 64))
    tok = Tokenizer.train(["the square"] * 4, vocab_size=16, model_type="bpe")
    long = Sample(**{**square_samples[0].__dict__, "expression": "the " * 60 + "square"})
    ds = ReferringTorchDataset([long], tokenizer=tok, config=cfg)
    with pytest.raises(ValueError, match="limit"):
        ds[0]
    with pytest.raises(ValueError, match="no samples"):
        ReferringTorchDataset([], tokenizer=tok, config=cfg)
