"""J-HMDB-Sentences loader: PNG frames, MATLAB v5 and v7.3 puppet masks, recorded frame choice."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fixtures_real import (
    COLOURS,
    JHMDB_ACTOR,
    JHMDB_SIZE,
    JHMDB_VIDEOS,
    Expected,
    assert_sample,
    make_jhmdb,
    object_square_mask,
)

from training.datasets import DatasetFormatError, DatasetLayoutError, JHMDBSentences, open_dataset
from training.datasets.jhmdb import choose_frames, load_part_mask, part_mask_frames

V5 = "April_09_brush_hair_u_nm_np1_ba_goo_0"
V73 = "Ball_hit_catch_f_cm_np1_fr_med_0"
SHORT = "short_clap_0"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_jhmdb(tmp_path_factory.mktemp("jhmdb"))


@pytest.fixture
def tree_copy(tree, tmp_path):
    root = tmp_path / "jhmdb"
    shutil.copytree(tree.root, root)
    return root


def expected_for(tree, video_id: str, frame_index: int) -> Expected:
    return Expected(
        video_id=video_id,
        frame_index=frame_index,
        object_id="0",
        expression=tree.extra["queries"][video_id],
        mask=object_square_mask(JHMDB_ACTOR, frame_index, size=JHMDB_SIZE),
        colour=COLOURS[JHMDB_ACTOR],
    )


def test_every_field_and_recorded_frame_list(tree, tmp_path):
    frame_list = tmp_path / "lists" / "jhmdb_frames.json"
    ds = JHMDBSentences(root=tree.root, seed=7, frame_list=frame_list)
    recorded = json.loads(frame_list.read_text())
    assert recorded["seed"] == 7 and recorded["frames_per_video"] == 3
    assert recorded["index_base"] == 0
    assert recorded["frames"] == ds.chosen
    available = tree.extra["available"]
    assert set(ds.chosen) == set(available)
    for video_id, frames in ds.chosen.items():
        assert frames == sorted(set(frames))
        assert len(frames) == min(3, available[video_id])
        assert all(0 <= t < available[video_id] for t in frames)
    assert ds.chosen[SHORT] == [0, 1]  # fewer frames than 3: all of them
    assert len(ds) == 3 + 3 + 2
    for i, entry in enumerate(ds.entries):
        assert entry.action == tree.extra["actions"][entry.video_id]
        assert_sample(
            ds[i],
            expected_for(tree, entry.video_id, entry.frame_index),
            dataset="jhmdb",
            split="test",
        )


def test_frames_only_where_images_and_mask_overlap(tree):
    """brush_hair has 8 PNGs but T = 7 mask planes: frame 7 is never chosen."""
    assert part_mask_frames(tree.root / "puppet_mask" / "brush_hair" / V5 / "puppet_mask.mat") == 7
    for seed in range(40):
        ds = JHMDBSentences(root=tree.root, seed=seed)
        assert max(ds.chosen[V5]) < 7


def test_choice_is_deterministic_and_seeded(tree):
    a = JHMDBSentences(root=tree.root, seed=3).chosen
    b = JHMDBSentences(root=tree.root, seed=3).chosen
    assert a == b
    assert any(JHMDBSentences(root=tree.root, seed=s).chosen != a for s in (4, 5, 6))
    # the choice depends only on (seed, video, frame count), not on the other videos
    assert choose_frames(V5, 7, seed=3, count=3) == a[V5]
    assert choose_frames(V5, 7, seed=3, count=3) == choose_frames(V5, 7, seed=3, count=3)
    assert choose_frames("x", 2, seed=0, count=3) == [0, 1]


def test_existing_frame_list_wins_over_seed(tree, tmp_path):
    frame_list = tmp_path / "frames.json"
    frames = {V5: [0, 4, 6], V73: [1, 2, 5], SHORT: [1]}
    frame_list.write_text(json.dumps({"frames": frames}))
    ds = JHMDBSentences(root=tree.root, seed=123, frame_list=frame_list)
    assert ds.chosen == frames
    got = [(s.video_id, s.frame_index) for s in ds]
    assert got == [(v, t) for v in sorted(frames) for t in frames[v]]
    first = ds[0]
    assert (first.video_id, first.frame_index, first.prev_frame) == (V5, 0, None)
    assert json.loads(frame_list.read_text()) == {"frames": frames}  # not overwritten


def test_frame_list_that_does_not_match_is_rejected(tree, tmp_path):
    frame_list = tmp_path / "frames.json"
    frame_list.write_text(json.dumps({"frames": {V5: [0], V73: [1]}}))
    with pytest.raises(DatasetFormatError, match=f"no frames for 1 annotated videos .*{SHORT}"):
        JHMDBSentences(root=tree.root, frame_list=frame_list)
    frame_list.write_text(json.dumps({"frames": {V5: [7], V73: [1], SHORT: [0]}}))
    with pytest.raises(DatasetFormatError, match=r"has 7 frames, frame list asks for \[7\]"):
        JHMDBSentences(root=tree.root, frame_list=frame_list)
    frame_list.write_text("not json")
    with pytest.raises(DatasetFormatError, match="not a J-HMDB frame list"):
        JHMDBSentences(root=tree.root, frame_list=frame_list)


def test_mat_v5_and_v73_read_as_h_w_t(tree):
    for video_id in (V5, V73):
        action, _, n_mask, fmt = JHMDB_VIDEOS[video_id]
        path = tree.root / "puppet_mask" / action / video_id / "puppet_mask.mat"
        masks = load_part_mask(path)
        assert masks.shape == (*JHMDB_SIZE, n_mask), fmt
        assert masks.dtype == np.uint8
        assert part_mask_frames(path) == n_mask
        for t in range(n_mask):
            np.testing.assert_array_equal(
                masks[:, :, t], object_square_mask(JHMDB_ACTOR, t, size=JHMDB_SIZE)
            )


def test_open_dataset_and_bad_options(tree):
    ds = open_dataset("jhmdb", tree.root, frames_per_video=1)
    assert len(ds) == 3 and ds.split == "test"
    with pytest.raises(ValueError, match="valid: test"):
        open_dataset("jhmdb", tree.root, split="train")
    with pytest.raises(ValueError, match="frames_per_video must be >= 1"):
        JHMDBSentences(root=tree.root, frames_per_video=0)
    with pytest.raises(ValueError, match="valid: frames_per_video, seed, frame_list"):
        open_dataset("jhmdb", tree.root, frames=3)


@pytest.mark.parametrize("rel", ["Rename_Images", "puppet_mask", "jhmdb_annotation.txt"])
def test_missing_layout_path_is_named_with_the_layout(tree_copy, rel):
    path = tree_copy / rel
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(DatasetLayoutError) as info:
        JHMDBSentences(root=tree_copy)
    assert str(path) in str(info.value)
    assert "puppet_mask/<action>/<video>/puppet_mask.mat" in str(info.value)


def test_missing_mask_or_video_is_named(tree_copy):
    mat = tree_copy / "puppet_mask" / "catch" / V73 / "puppet_mask.mat"
    mat.unlink()
    with pytest.raises(DatasetLayoutError, match=str(mat)):
        JHMDBSentences(root=tree_copy)
    shutil.rmtree(tree_copy / "Rename_Images" / "catch" / V73)
    with pytest.raises(DatasetLayoutError, match=f"Rename_Images/<action>/{V73}"):
        JHMDBSentences(root=tree_copy)


def test_bad_header_is_a_format_error(tree_copy):
    (tree_copy / "jhmdb_annotation.txt").write_text("video,sentence\nx,y\n")
    with pytest.raises(DatasetFormatError, match="expected header video_id,query"):
        JHMDBSentences(root=tree_copy)
