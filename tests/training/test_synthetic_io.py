"""Synthetic data on disk (CLI, reader, previews) and the fixed test-set manifest."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image, ImageSequence

from training.make_synthetic import main
from training.synthetic import (
    SyntheticDataset,
    SyntheticDiskDataset,
    SyntheticSpec,
    fixed_test_seeds,
    generate_clip,
    verify_test_set,
)
from training.synthetic.io import read_index_png
from training.synthetic.preview import write_preview
from training.synthetic.testset import (
    TEST_CLIPS_PER_SPLIT,
    TEST_SET_VERSION,
    TEST_SPEC,
    load_manifest,
    load_test_set,
)

SPEC = SyntheticSpec(size=(96, 128), frames=5)
CLI = ["--size", "96x128", "--frames", "5", "--clips", "2", "--seed", "10"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    assert main(["--out", str(root), "--split", "all", "--preview", *CLI]) == 0
    return root


def test_layout_and_indexed_masks(written):
    index = json.loads((written / "index.json").read_text())
    assert index["format"] == "hinet-synthetic" and len(index["clips"]) == 4
    assert SyntheticSpec.from_dict(index["spec"]) == SPEC
    entry = next(c for c in index["clips"] if c["split"] == "motion")
    clip = generate_clip(entry["seed"], split="motion", spec=SPEC)
    assert entry["sha256"] == clip.digest()
    assert entry["targets"] == [o.object_id for o in clip.targets]
    cdir = written / "clips" / entry["video_id"]
    with Image.open(cdir / "masks" / "00002.png") as im:
        assert im.mode == "P"
    labels = read_index_png(cdir / "masks" / "00002.png")
    assert np.array_equal(labels, clip.label_map(2))
    meta = json.loads((cdir / "objects.json").read_text())
    assert [o["expression"] for o in meta["objects"]] == [o.expression for o in clip.objects]
    assert meta["objects"][0]["motion"]["label"] == clip.objects[0].motion


def test_disk_round_trip_matches_generator(written):
    disk = SyntheticDiskDataset(written, split="motion")
    mem = SyntheticDataset(split="motion", seeds=[10, 11], spec=SPEC)
    assert len(disk) == len(mem) == 2 * 2 * 5
    for i in range(len(disk)):
        a, b = disk[i], mem[i]
        assert (a.video_id, a.object_id, a.frame_index) == (b.video_id, b.object_id, b.frame_index)
        assert a.expression == b.expression and a.split == "motion"
        assert np.array_equal(a.frame, b.frame) and np.array_equal(a.mask, b.mask)
        assert (a.prev_frame is None) == (b.prev_frame is None)
        assert np.array_equal(a.flow, b.flow)  # same frames, same flow code
    assert len(SyntheticDiskDataset(written)) == len(disk) + len(
        SyntheticDataset(split="appearance", seeds=[10, 11], spec=SPEC)
    )


def test_jpeg_frames_keep_exact_masks(tmp_path):
    assert (
        main(["--out", str(tmp_path), "--split", "appearance", "--image-format", "jpg", *CLI]) == 0
    )
    disk = SyntheticDiskDataset(tmp_path, flow_preset=None)
    mem = SyntheticDataset(split="appearance", seeds=[10, 11], spec=SPEC, flow_preset=None)
    for i in (0, 3, len(disk) - 1):
        a, b = disk[i], mem[i]
        assert np.array_equal(a.mask, b.mask) and a.flow is None
        assert np.abs(a.frame.astype(int) - b.frame).mean() < 4


def test_previews(written, tmp_path):
    clip = generate_clip(10, split="motion", spec=SPEC)
    with Image.open(written / "previews" / f"{clip.video_id}.gif") as gif:
        frames = [np.array(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    assert len(frames) == len(clip.targets) * SPEC.frames
    assert frames[0].shape == (96, 128, 3)
    mp4 = write_preview(tmp_path / "p.mp4", clip)
    cap = cv2.VideoCapture(str(mp4))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == len(clip.targets) * SPEC.frames
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        write_preview(tmp_path / "p.avi", clip)


def test_reader_bad_layouts(written, tmp_path):
    with pytest.raises(FileNotFoundError, match="expected layout") as e:
        SyntheticDiskDataset(tmp_path / "nope")
    assert "nope" in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"index\.json.*expected layout"):
        SyntheticDiskDataset(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "coco", "clips": []}))
    with pytest.raises(ValueError, match="expected 'hinet-synthetic'"):
        SyntheticDiskDataset(tmp_path)
    index = json.loads((written / "index.json").read_text())
    del index["clips"][1]["targets"]
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"clip #1 lacks \['targets'\]"):
        SyntheticDiskDataset(tmp_path)
    with pytest.raises(ValueError, match="valid: \\['appearance', 'motion'\\]"):
        SyntheticDiskDataset(written, split="colour")
    broken = tmp_path / "broken"
    shutil.copytree(written, broken)
    index = json.loads((broken / "index.json").read_text())
    victim = broken / "clips" / index["clips"][0]["video_id"] / "masks" / "00001.png"
    victim.unlink()
    ds = SyntheticDiskDataset(broken)
    with pytest.raises(FileNotFoundError, match="missing mask") as e:
        ds[0]
    assert str(victim) in str(e.value)


def test_cli_bad_input(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--size", "96by128"]) == 2
    assert "HxW" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--clips", "0"]) == 2
    assert main(["--size", "96x128"]) == 2
    assert "--out is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--split", "colour"])
    assert main(["--out", str(tmp_path), "--split", "motion", *CLI]) == 0
    assert main(["--out", str(tmp_path), "--split", "motion", *CLI]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_manifest_matches_regenerated_test_clips():
    manifest = load_manifest()
    assert manifest["test_set_version"] == TEST_SET_VERSION
    for split in ("appearance", "motion"):
        assert len(manifest["clips"][split]) == TEST_CLIPS_PER_SPLIT
        assert [int(s) for s in manifest["clips"][split]] == fixed_test_seeds(split)
    assert verify_test_set(limit=2, manifest=manifest) == []
    tampered = json.loads(json.dumps(manifest))
    tampered["clips"]["motion"][str(fixed_test_seeds("motion")[1])] = "0" * 64
    bad = verify_test_set(split="motion", limit=2, manifest=tampered)
    assert len(bad) == 1 and "motion seed" in bad[0]


def test_load_test_set_is_fixed():
    first = next(load_test_set("motion"))
    assert first.seed == fixed_test_seeds("motion")[0] and first.spec == TEST_SPEC
    assert first.spec.size == (320, 320) and first.split == "motion"
    with pytest.raises(ValueError, match="valid: all, appearance, motion"):
        next(load_test_set("train"))
