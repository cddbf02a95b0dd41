"""Registry and shared helpers of the real-dataset loaders."""

from __future__ import annotations

import numpy as np
import pytest

from training.datasets import DATASETS, DatasetLayoutError, dataset_options, open_dataset
from training.datasets.common import (
    VideoFrameReader,
    check_layout,
    decode_text,
    normalize_expression,
    object_mask,
)


def test_unknown_dataset_names_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid: a2d, jhmdb, davis17, ytvos"):
        open_dataset("refcoco", tmp_path)


def test_unknown_option_names_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid: annotator, expressions"):
        open_dataset("davis17", tmp_path, annotators=1)
    assert dataset_options("a2d") == ["progress"]
    assert dataset_options("ytvos") == []


@pytest.mark.parametrize("name", list(DATASETS))
def test_empty_root_is_a_layout_error(tmp_path, name):
    with pytest.raises(DatasetLayoutError) as info:
        open_dataset(name, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{name}: missing {tmp_path}")
    assert "Expected layout under --root" in message
    assert DATASETS[name].layout.splitlines()[1].strip() in message


def test_missing_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match=f"missing {tmp_path / 'nope'}"):
        check_layout(tmp_path / "nope", dataset="x", required=["a"], layout="<root>/a")


def test_hint_for_a_root_one_level_too_high(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=f"Hint: {tmp_path / 'data'} has this layout"):
        check_layout(tmp_path, dataset="x", required=["a"], layout="<root>/a")


def test_normalize_expression():
    assert normalize_expression("  The BIG\tdog\n  runs ") == "the big dog runs"
    assert normalize_expression(" \t") == ""


def test_decode_text():
    assert decode_text("caf\u00e9".encode("latin-1"), encodings=("utf-8", "latin-1")) == "caf\u00e9"
    assert decode_text("\ufeffna\u00efve".encode(), encodings=("utf-8",)) == "na\u00efve"
    with pytest.raises(ValueError, match="cannot decode as any of utf-8"):
        decode_text(b"\xff\xfe\xfa", encodings=("utf-8",))


def test_object_mask_keeps_void():
    labels = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    np.testing.assert_array_equal(object_mask(labels, 1), [[0, 1, 0], [255, 1, 0]])
    np.testing.assert_array_equal(object_mask(labels, 2), [[0, 0, 1], [255, 0, 0]])


def test_video_reader_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cache_size must be >= 2"):
        VideoFrameReader(cache_size=1)
    with pytest.raises(ValueError, match="frame index must be >= 0"):
        VideoFrameReader().read("x.mp4", -1)
