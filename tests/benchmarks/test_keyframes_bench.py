"""The keyframes benchmark's two measures on the tiny model: synthetic clips with labels, real
clips against every-frame inference (a real video written here; bikes.mp4 when installed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks import keyframes


@pytest.fixture(scope="module")
def tiny_engine(tiny_checkpoint):
    import torch

    from export.engines import create_engine

    torch.set_num_threads(1)
    return create_engine("torch", tiny_checkpoint, input_size=(64, 64))


def _frames(n: int = 9) -> list[np.ndarray]:
    out = []
    for i in range(n):
        img = np.full((96, 128, 3), 70, np.uint8)
        cv2.circle(img, (20 + 9 * i, 48), 14, (40, 40, 230), -1)
        out.append(img)
    return out


def test_real_rows_compare_with_every_frame_inference(tiny_engine, tmp_path):
    clip = [(tmp_path / "clip.mp4", _frames(), "the red circle")]
    every = keyframes.measure_real(tiny_engine, clip, "1")
    assert every["agreement_iou"] == pytest.approx(1.0) and every["inferred"] == 1.0
    second = keyframes.measure_real(tiny_engine, clip, "2")
    assert second["inferred"] == pytest.approx(5 / 9)
    assert 0.0 <= second["agreement_iou"] <= 1.0 and second["frames"] == 9
    assert 0.0 <= second["flicker"] <= 1.0


def test_synthetic_rows_score_against_the_true_masks(tiny_engine):
    clips = keyframes._clips(1)
    row = keyframes.measure(tiny_engine, clips[:1], "3")
    assert row["policy"] == "3" and 0.0 <= row["mIoU"] <= 1.0
    assert row["inferred"] == pytest.approx(
        np.mean([t % 3 == 0 for t in range(len(clips[0].frames))]), abs=0.01
    )
