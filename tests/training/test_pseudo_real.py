"""Pseudo-labelled real frames: the GrabCut-refined teacher mask, the file, the recipe mix."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from training import pseudo_real
from training.pseudo_real import (
    OPENCV_DATA,
    WINDOW,
    PseudoRealDataset,
    Repeated,
    build,
    pseudo_mask,
)
from training.sample import VOID


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A textured grey frame with a saturated red disc; the disc's mask."""
    frame = rng.integers(90, 140, (120, 160, 3), dtype=np.uint8)
    disc = np.zeros((120, 160), np.uint8)
    cv2.circle(disc, (100, 60), 22, 1, -1)
    frame[disc == 1] = (30, 30, 220)
    return frame, disc


def _blob(shape: tuple[int, int], centre: tuple[int, int], sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2)).astype(
        np.float32
    )


def test_pseudo_mask_snaps_a_coarse_blob_to_the_object() -> None:
    frame, disc = _scene(np.random.default_rng(0))
    teacher = 0.3 * _blob(disc.shape, (64, 96), 30.0)  # off-centre and wider than the disc
    label = pseudo_mask(frame, teacher)
    assert set(np.unique(label)) <= {0, 1, VOID}
    obj = label == 1
    assert obj.sum() > 0.6 * disc.sum()  # most of the disc
    assert (obj & (disc == 0)).sum() < 0.15 * obj.sum()  # little of the grey around it
    assert (label[:, :20] == 0).all()  # far from the blob: background
    # the thresholded blob alone would have marked grey texture as the object
    assert ((teacher / teacher.max() >= 0.5) & (disc == 0)).sum() > 0.3 * disc.sum()


def test_pseudo_mask_falls_back_to_the_map_when_grabcut_has_no_background() -> None:
    frame = np.full((64, 64, 3), 120, np.uint8)
    teacher = np.ones((64, 64), np.float32)  # nowhere sure background: no GrabCut
    label = pseudo_mask(frame, teacher)
    assert (label == 1).all()


def test_repeated_wraps_and_bounds() -> None:
    rep = Repeated(["a", "b", "c"], 2)
    assert len(rep) == 6 and [rep[i] for i in range(6)] == list("abcabc")
    with pytest.raises(IndexError):
        rep[6]
    with pytest.raises(ValueError, match="times"):
        Repeated(["a"], 0)


def test_dataset_names_the_build_command_when_the_file_is_missing(tmp_path) -> None:
    path = tmp_path / "none.npz"
    with pytest.raises(FileNotFoundError, match="python -m training.pseudo_real --out"):
        PseudoRealDataset(path)


def test_build_refuses_a_missing_root_and_the_cli_says_so(tmp_path, capsys) -> None:
    with pytest.raises(FileNotFoundError, match="opencv-doc"):
        build(tmp_path / "out.npz", root=tmp_path / "nothing", progress=False)
    assert pseudo_real.main(["--out", str(tmp_path / "o.npz"), "--root", str(tmp_path / "x")]) == 2
    assert "opencv-doc" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


def _small_root(tmp_path):
    """A root with one opencv-doc photo and a short 'video' panning across it."""
    photo = OPENCV_DATA / "orange.jpg"
    if not photo.is_file():
        pytest.skip("needs Debian's opencv-doc (scripts/setup.sh installs it)")
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(photo, root / "orange.jpg")
    img = cv2.imread(str(photo))
    h, w = img.shape[:2]
    writer = cv2.VideoWriter(str(root / "tree.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                             (w - 40, h - 40))  # fmt: skip
    for t in range(21):
        writer.write(np.ascontiguousarray(img[20:-20, t : t + w - 40]))
    writer.release()
    return root


def test_build_writes_real_samples_with_prior_labels(tmp_path, monkeypatch) -> None:
    root = _small_root(tmp_path)
    monkeypatch.setattr(pseudo_real, "STILLS", ("orange.jpg",))
    monkeypatch.setattr(pseudo_real, "VIDEOS", {"tree.avi": 10})  # frames 9 and 19
    out = tmp_path / "pseudo.npz"
    summary = build(out, root=root, progress=False)
    assert summary["frames"] == 3
    ds = PseudoRealDataset(out)
    assert len(ds) == summary["samples"] == summary["positives"] + summary["negatives"]
    assert summary["positives"] > 0
    phrases = set(ds.phrases)
    assert phrases & {"the orange", "the fruit", "the lemon"}, phrases  # the photo's fruit
    for i in range(len(ds)):
        s = ds[i]
        assert s.frame.shape == (WINDOW, WINDOW, 3) and s.mask.shape == (WINDOW, WINDOW)
        assert s.expression.startswith("the ") and s.dataset == "pseudo_real"
        assert (s.prev_frame is None) == s.video_id.startswith("orange.jpg")
        if s.prev_frame is not None:
            assert not np.array_equal(s.prev_frame, s.frame)  # real motion between frames
    # the orange fills the middle of the photo: a fruit label marks it there
    fruit = [ds[i] for i in range(len(ds)) if ds.phrases[i] in ("the orange", "the fruit")]
    assert any((s.mask == 1).mean() > 0.2 for s in fruit)
    assert ds.expressions() == ds.phrases
    # seeded: the same file twice
    again = tmp_path / "again.npz"
    build(again, root=root, progress=False)
    with np.load(out) as a, np.load(again) as b:
        assert np.array_equal(a["masks"], b["masks"]) and list(a["phrases"]) == list(b["phrases"])


def test_build_with_the_person_class_labels_the_player(tmp_path, monkeypatch) -> None:
    """With the person segmenter in the teacher, a person noun is a positive on the player."""
    from models.grounding import PERSON_NAMES
    from models.pretrained import PretrainedMissingError, person_segmenter_file

    try:
        person_segmenter_file()
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))
    photo = OPENCV_DATA / "messi5.jpg"
    if not photo.is_file():
        pytest.skip("needs Debian's opencv-doc (scripts/setup.sh installs it)")
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(photo, root / "messi5.jpg")
    monkeypatch.setattr(pseudo_real, "STILLS", ("messi5.jpg",))
    monkeypatch.setattr(pseudo_real, "VIDEOS", {})
    out = tmp_path / "person.npz"
    summary = build(out, root=root, progress=False, person=True)
    assert summary["person"] is True
    ds = PseudoRealDataset(out)
    people = {f"the {n}" for n in PERSON_NAMES}
    windows = [ds[i] for i in range(len(ds)) if ds.phrases[i] in people]
    assert windows, ds.phrases
    # the windows are cut around the player: the person label covers much of them
    assert max((s.mask == 1).mean() for s in windows) > 0.15


def test_recipe_mixes_the_real_samples_at_the_share(tmp_path) -> None:
    from training.recipe import Recipe, build_data

    n = 10
    path = tmp_path / "p.npz"
    frames = np.zeros((n, WINDOW, WINDOW, 3), np.uint8)
    np.savez_compressed(
        path,
        frames=frames,
        prevs=frames,
        masks=np.zeros((n, WINDOW, WINDOW), np.uint8),
        phrases=np.asarray(["the van"] * n),
        sources=np.asarray([f"x.jpg:{i}" for i in range(n)]),
        summary=np.asarray(json.dumps({"samples": n})),
    )
    data = {
        "kind": "synthetic",
        "size": [64, 64],
        "train_clips": {"appearance": 2, "motion": 2},
        "val_clips": {"appearance": 1, "motion": 1},
        "pseudo_real": {"path": str(path), "share": 0.5},
    }
    recipe = Recipe(name="t", preset="hinet_lite0", data=data, steps=1, batch_size=2, lr=1e-3)
    train, val = build_data(recipe)
    synthetic = sum(len(p) for p in train[:-1])
    real = train[-1]
    assert isinstance(real, Repeated) and len(real) % n == 0
    assert abs(len(real) - synthetic) <= n  # share 0.5: as many real as synthetic samples
    assert real[0].expression == "the van" and real[0].prev_frame is None
    assert all(not isinstance(p, Repeated) for p in val)
    with pytest.raises(ValueError, match="share"):
        build_data(Recipe(name="t", preset="hinet_lite0", steps=1, batch_size=2, lr=1e-3,
                                          data={**data, "pseudo_real": {"path": str(path), "share": 1.0}}))  # fmt: skip
