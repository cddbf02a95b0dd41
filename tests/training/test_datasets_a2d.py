"""A2D-Sentences loader on a fixture tree in the published format (mp4 + MATLAB-order .h5)."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from fixtures_real import (
    A2D_FRAMES,
    A2D_SIZE,
    assert_sample,
    bg_level,
    make_a2d,
    object_square_mask,
)

from training.datasets import A2DSentences, DatasetFormatError, DatasetLayoutError, open_dataset
from training.datasets.a2d import read_a2d_mask
from training.datasets.common import VideoFrameReader


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_a2d(tmp_path_factory.mktemp("a2d"))


@pytest.fixture
def tree_copy(tree, tmp_path):
    root = tmp_path / "a2d"
    shutil.copytree(tree.root, root)
    return root


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_field_of_every_sample(tree, split):
    ds = A2DSentences(root=tree.root, split=split, progress=False)
    expected = tree.expected[split]
    assert len(ds) == len(expected)
    for i, exp in enumerate(expected):
        assert_sample(ds[i], exp, dataset="a2d", split=split)
    assert ds[-1].video_id == expected[-1].video_id
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_h5_frame_numbers_are_one_based(tree):
    """00003.h5 is the third frame of the mp4 (frame_index 2), its previous frame index 1."""
    ds = A2DSentences(root=tree.root, split="train", progress=False)
    sample = ds[0]
    assert (sample.video_id, sample.frame_index) == ("vidA", 2)
    assert abs(float(np.median(sample.frame)) - bg_level(2)) <= 6
    assert abs(float(np.median(sample.prev_frame)) - bg_level(1)) <= 6


def test_first_frame_has_no_previous_frame(tree):
    ds = A2DSentences(root=tree.root, split="train", progress=False)
    (first,) = [s for s in ds if s.video_id == "vidC" and s.frame_index == 0]
    assert first.prev_frame is None


def test_rematrix_transposed_back_for_3d_and_2d(tree):
    h5 = tree.root / "text_annotations" / "a2d_annotation_with_instances"
    three_d = read_a2d_mask(h5 / "vidA" / "00003.h5", 1)  # (N, W, H) stored
    two_d = read_a2d_mask(h5 / "vidA" / "00006.h5", 0)  # N == 1: (W, H) stored
    assert three_d.shape == two_d.shape == A2D_SIZE
    np.testing.assert_array_equal(three_d, object_square_mask(1, 2, size=A2D_SIZE))
    np.testing.assert_array_equal(two_d, object_square_mask(1, 5, size=A2D_SIZE))


def test_instances_matched_by_id_not_by_order(tree):
    """vidB's .h5 lists instances [1, 0]: each query still gets its own instance's mask."""
    ds = A2DSentences(root=tree.root, split="test", progress=False)
    by_id = {s.object_id: s for s in ds}
    np.testing.assert_array_equal(by_id["1"].mask, object_square_mask(1, 3, size=A2D_SIZE))
    np.testing.assert_array_equal(by_id["0"].mask, object_square_mask(0, 3, size=A2D_SIZE))


def test_copy_row_dropped_and_logged(tree, caplog):
    with caplog.at_level(logging.WARNING, logger="training.datasets.a2d"):
        ds = A2DSentences(root=tree.root, split="train", progress=False)
    assert ds.dropped_rows == 1
    assert "'1 (copy)'" in caplog.text
    # the copied query exists once per frame of instance 1, not twice
    rows = [(e.video_id, e.frame_index, e.object_id) for e in ds.entries]
    assert len(rows) == len(set(rows))


def test_duplicated_instance_id_takes_first_mask(tree, caplog):
    with caplog.at_level(logging.WARNING, logger="training.datasets.a2d"):
        ds = A2DSentences(root=tree.root, split="train", progress=False)
    assert "00005.h5 lists instance ids [0, 0]" in caplog.text
    dup = [s for s in ds if s.video_id == "vidC" and s.frame_index == 4]
    assert len(dup) == 1
    np.testing.assert_array_equal(dup[0].mask, object_square_mask(0, 4, size=A2D_SIZE))


def test_missed_videos_excluded(tree, tree_copy):
    assert "vidMiss" not in A2DSentences(root=tree.root, split="train", progress=False).video_ids()
    # the exclusion list is the only reason: without it the video has samples
    (tree_copy / "text_annotations" / "a2d_missed_videos.txt").write_text("\n")
    ds = A2DSentences(root=tree_copy, split="train", progress=False)
    assert "vidMiss" in ds.video_ids()
    assert "vidZ" not in ds.video_ids()  # annotated but not in videoset.csv


def test_open_dataset_and_metadata(tree):
    ds = open_dataset("a2d", tree.root, split="test", progress=False)
    assert isinstance(ds, A2DSentences)
    assert ds.video_ids() == ["vidB"]
    assert ds.expressions() == ["green square in the test video", "red square in the test video"]
    assert "samples=2" in repr(ds)


def test_unknown_split_names_valid_ones(tree):
    with pytest.raises(ValueError, match="valid: train, test"):
        A2DSentences(root=tree.root, split="val")


@pytest.mark.parametrize(
    "rel",
    [
        "Release/videoset.csv",
        "Release/clips320H",
        "text_annotations/a2d_annotation.txt",
        "text_annotations/a2d_missed_videos.txt",
        "text_annotations/a2d_annotation_with_instances",
    ],
)
def test_missing_layout_path_is_named_with_the_layout(tree_copy, rel):
    path = tree_copy / rel
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(DatasetLayoutError) as info:
        A2DSentences(root=tree_copy, split="train", progress=False)
    message = str(info.value)
    assert str(path) in message
    assert "clips320H/<vid>.mp4" in message and "a2d_missed_videos.txt" in message
    assert isinstance(info.value, ValueError)


def test_missing_video_file_is_named(tree_copy):
    (tree_copy / "Release" / "clips320H" / "vidC.mp4").unlink()
    with pytest.raises(DatasetLayoutError, match="vidC.mp4"):
        A2DSentences(root=tree_copy, split="train", progress=False)


def test_root_one_level_off_gets_a_hint(tree):
    with pytest.raises(DatasetLayoutError, match=f"Hint: {tree.root} has this layout"):
        A2DSentences(root=tree.root / "Release", split="train")


def test_bad_videoset_and_header_are_format_errors(tree_copy):
    videoset = tree_copy / "Release" / "videoset.csv"
    good = videoset.read_text()
    videoset.write_text("vidA,11,0,1\n")
    with pytest.raises(DatasetFormatError, match="expected 9 columns"):
        A2DSentences(root=tree_copy, split="train", progress=False)
    videoset.write_text(good)
    annotation = tree_copy / "text_annotations" / "a2d_annotation.txt"
    annotation.write_text("vid,query\n")
    with pytest.raises(DatasetFormatError, match="video_id,instance_id,query"):
        A2DSentences(root=tree_copy, split="train", progress=False)


def test_video_reader_random_access(tree):
    video = tree.root / "Release" / "clips320H" / "vidA.mp4"
    reader = VideoFrameReader(cache_size=2)
    for t in [5, 6, 1, 7, 0, 3, 3]:  # forward, backward, repeats
        frame = reader.read(video, t)
        assert frame.shape == (*A2D_SIZE, 3) and frame.dtype == np.uint8
        assert abs(float(np.median(frame)) - bg_level(t)) <= 6
    with pytest.raises(DatasetFormatError, match=f"no frame {A2D_FRAMES}"):
        reader.read(video, A2D_FRAMES)
    with pytest.raises(DatasetFormatError, match="cannot open video"):
        reader.read(tree.root / "missing.mp4", 0)


def test_dataloader_workers_read_their_own_video_handles(tree):
    """Forked workers must not share the parent's open capture (and its file position)."""
    torch = pytest.importorskip("torch")
    ds = A2DSentences(root=tree.root, split="train", progress=False)
    ds[2]  # the parent now holds an open capture of vidA
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="fork", collate_fn=lambda s: s
    )
    got = list(loader)
    assert [(s.video_id, s.frame_index, s.object_id) for s in got] == [
        (e.video_id, e.frame_index, e.object_id) for e in tree.expected["train"]
    ]
    for sample, exp in zip(got, tree.expected["train"]):
        assert_sample(sample, exp, dataset="a2d", split="train")
