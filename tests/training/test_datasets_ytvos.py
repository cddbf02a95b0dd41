"""Ref-YouTube-VOS loader: meta_expressions.json, subsampled JPEG frames, indexed PNG masks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fixtures_real import assert_sample, make_ytvos

from training.datasets import DatasetFormatError, DatasetLayoutError, RefYouTubeVOS, open_dataset


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_ytvos(tmp_path_factory.mktemp("ytvos"))


@pytest.fixture
def tree_copy(tree, tmp_path):
    root = tmp_path / "ytvos"
    shutil.copytree(tree.root, root)
    return root


def test_every_field_of_every_sample(tree):
    ds = RefYouTubeVOS(root=tree.root, split="train")
    expected = tree.expected["train"]
    assert len(ds) == len(expected)
    for i, exp in enumerate(expected):
        assert_sample(ds[i], exp, dataset="ytvos", split="train")


def test_previous_frame_is_the_previous_listed_frame(tree):
    ds = RefYouTubeVOS(root=tree.root, split="train")
    entry = ds.entries[2]
    assert (entry.video_id, entry.frame_name, entry.prev_name, entry.frame_index) == (
        "003234408d",
        "00010",
        "00005",
        2,
    )


def test_absent_object_gives_an_empty_mask(tree):
    ds = RefYouTubeVOS(root=tree.root, split="train")
    (absent,) = [i for i, e in enumerate(ds.entries) if e.object_id == "2" and e.frame_index == 1]
    assert not np.any(ds[absent].mask)


def test_split_without_masks_is_explained(tree):
    with pytest.raises(DatasetLayoutError, match="masks for 'train' only") as info:
        open_dataset("ytvos", tree.root, split="valid")
    assert str(tree.root / "valid" / "Annotations") in str(info.value)
    with pytest.raises(ValueError, match="valid: train, valid, test"):
        RefYouTubeVOS(root=tree.root, split="val")


@pytest.mark.parametrize(
    "rel", ["meta_expressions/train/meta_expressions.json", "train/JPEGImages", "train/Annotations"]
)
def test_missing_layout_path_is_named_with_the_layout(tree_copy, rel):
    path = tree_copy / rel
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(DatasetLayoutError) as info:
        RefYouTubeVOS(root=tree_copy, split="train")
    assert str(path) in str(info.value)
    assert "meta_expressions/<split>/meta_expressions.json" in str(info.value)


def test_missing_video_folder_and_frame_are_named(tree_copy):
    frame = tree_copy / "train" / "Annotations" / "0043f083b5" / "00005.png"
    frame.unlink()
    ds = RefYouTubeVOS(root=tree_copy, split="train")
    with pytest.raises(DatasetLayoutError, match=str(frame)):
        ds[len(ds) - 1]
    shutil.rmtree(frame.parent)
    with pytest.raises(DatasetLayoutError, match=str(frame.parent)):
        RefYouTubeVOS(root=tree_copy, split="train")


def test_malformed_meta_is_a_format_error(tree_copy):
    meta = tree_copy / "meta_expressions" / "train" / "meta_expressions.json"
    meta.write_text(
        json.dumps({"videos": {"003234408d": {"expressions": {"0": {"exp": "x"}}, "frames": []}}})
    )
    with pytest.raises(DatasetFormatError, match="obj_id"):
        RefYouTubeVOS(root=tree_copy, split="train")
    meta.write_text("[]")
    with pytest.raises(DatasetFormatError, match="expected"):
        RefYouTubeVOS(root=tree_copy, split="train")
