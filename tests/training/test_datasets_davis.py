"""Ref-DAVIS17 loader: indexed PNG masks with void, latin-1 expressions, sequence-name typos."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fixtures_real import DAVIS_SIZE, assert_sample, davis_expected, make_davis
from PIL import Image

from training.datasets import DatasetFormatError, DatasetLayoutError, RefDAVIS17, open_dataset
from training.datasets.common import read_indexed_png
from training.datasets.davis import parse_expression_file


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_davis(tmp_path_factory.mktemp("davis"))


@pytest.fixture
def tree_copy(tree, tmp_path):
    root = tmp_path / "davis"
    shutil.copytree(tree.root, root)
    return root


def key(item):
    return (item.video_id, item.object_id, item.expression, item.frame_index)


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("annotator", [1, 2, "both"])
@pytest.mark.parametrize("full_video", [False, True])
def test_every_field_of_every_sample(tree, split, annotator, full_video):
    ds = RefDAVIS17(
        root=tree.root,
        split=split,
        annotator=annotator,
        expressions="full_video" if full_video else "first_frame",
    )
    annotators = (1, 2) if annotator == "both" else (annotator,)
    expected = davis_expected(split=split, annotators=annotators, full_video=full_video)
    assert sorted(map(key, ds.entries)) == sorted(map(key, expected))
    by_key = {key(e): e for e in expected}
    for i, entry in enumerate(ds.entries):
        assert entry.annotator in annotators
        assert_sample(ds[i], by_key[key(entry)], dataset="davis17", split=split)


def test_latin1_utf8_and_typos(tree):
    both = RefDAVIS17(root=tree.root, split="train", annotator="both")
    assert "car parked by a caf\u00e9" in both.expressions()  # annot2, latin-1
    assert "the na\u00efve green car" in both.expressions()  # annot1, utf-8
    full = RefDAVIS17(root=tree.root, split="train", annotator=1, expressions="full_video")
    assert full.expressions() == ["red car driving through the fa\u00e7ade"]  # latin-1 fallback
    assert both.video_ids() == ["classic-car", "dogs-scale"]  # from clasic-car, dog-scale
    val = RefDAVIS17(root=tree.root, split="val", annotator=1)
    assert "the red motorbike" in val.expressions()  # from motor-bike, normalised
    assert {e.video_id for e in val.entries if e.expression == "the red motorbike"} == {"motorbike"}


def test_parse_expression_file_fixes_typos(tree):
    text = tree.root / "davis_text_annotations"
    items = parse_expression_file(text / "Davis17_annot1.txt", annotator=1)
    assert [i.sequence for i in items] == [
        "classic-car",
        "classic-car",
        "dogs-scale",
        "motorbike",
        "motorbike",
        "bear",
    ]
    assert [i.object_id for i in items] == [1, 2, 1, 1, 2, 1]
    assert all(i.annotator == 1 for i in items)


def test_void_kept_and_object_selected_by_palette_index(tree):
    ds = RefDAVIS17(root=tree.root, split="val", annotator=1)
    one = next(s for s in ds if s.video_id == "motorbike" and s.object_id == "1")
    two = next(
        s for s in ds if s.video_id == "motorbike" and s.object_id == "2" and s.frame_index == 0
    )
    assert set(np.unique(one.mask)) == {0, 1, 255}
    assert set(np.unique(two.mask)) == {0, 1, 255}  # void is global, kept for every object
    np.testing.assert_array_equal(one.mask == 255, two.mask == 255)
    assert not np.any((one.mask == 1) & (two.mask == 1))


def test_masks_are_palette_indices_not_rgb(tree, tmp_path):
    png = tree.root / "DAVIS" / "Annotations" / "480p" / "bear" / "00000.png"
    with Image.open(png) as image:
        assert image.mode == "P"
        rgb = np.array(image.convert("RGB"))
    labels = read_indexed_png(png)
    assert labels.shape == DAVIS_SIZE and set(np.unique(labels)) == {0, 1, 255}
    assert rgb.max() == 224  # the palette colours differ from the indices
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetFormatError, match="expected an indexed"):
        read_indexed_png(tmp_path / "rgb.png")


def test_bad_options_name_valid_ones(tree):
    with pytest.raises(ValueError, match="valid: 1, 2, 'both'"):
        RefDAVIS17(root=tree.root, annotator=3)
    with pytest.raises(ValueError, match="valid: first_frame, full_video"):
        RefDAVIS17(root=tree.root, expressions="first")
    with pytest.raises(ValueError, match="valid: train, val"):
        open_dataset("davis17", tree.root, split="test")
    assert open_dataset("davis17", tree.root).split == "val"


@pytest.mark.parametrize(
    "rel",
    [
        "DAVIS/JPEGImages/480p",
        "DAVIS/Annotations/480p",
        "DAVIS/ImageSets/2017/val.txt",
        "davis_text_annotations/Davis17_annot1.txt",
        "davis_text_annotations/Davis17_annot2.txt",
    ],
)
def test_missing_layout_path_is_named_with_the_layout(tree_copy, rel):
    path = tree_copy / rel
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(DatasetLayoutError) as info:
        RefDAVIS17(root=tree_copy, split="val")
    assert str(path) in str(info.value)
    assert "Davis17_annot1_full_video.txt" in str(info.value)


def test_only_the_chosen_annotators_files_are_required(tree_copy):
    (tree_copy / "davis_text_annotations" / "Davis17_annot2.txt").unlink()
    assert len(RefDAVIS17(root=tree_copy, split="val", annotator=1)) > 0


def test_missing_sequence_folder_is_named(tree_copy):
    seq = tree_copy / "DAVIS" / "Annotations" / "480p" / "bear"
    shutil.rmtree(seq)
    with pytest.raises(DatasetLayoutError, match=str(seq)):
        RefDAVIS17(root=tree_copy, split="val")
