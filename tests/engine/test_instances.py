"""Instance evidence in the stream's session: the phrase's instance steers the mask, its scores
reach the results file and the HUD, and the boxes follow the flow between detector runs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from engine.detector import COCO_CLASSES, Detections, Detector  # noqa: E402
from engine.grounding import choose, parse_phrase, score_instances  # noqa: E402
from engine.instances import InstanceEvidence, InstanceView, _carried, fuse  # noqa: E402
from engine.overlay import result_lines  # noqa: E402
from models.files import OPENCV_DOC_DATA  # noqa: E402

VTEST = OPENCV_DOC_DATA / "vtest.avi"


@pytest.fixture(scope="module")
def walkers():
    """Frames 299 and 300 of vtest.avi: six people 30-90 px tall, seen from a first floor."""
    if not VTEST.is_file():
        pytest.skip("needs opencv-doc")
    cap = cv2.VideoCapture(str(VTEST))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 299)
    frames = [cap.read()[1] for _ in range(2)]
    cap.release()
    return frames


@pytest.fixture(scope="module")
def detector():
    return Detector(threads=1)


@pytest.fixture(scope="module")
def engine(tiny_minilm_checkpoint):
    """A real tiny network with the MiniLM text side (any English phrase), torch, 64x64."""
    from export.engines import create_engine

    eng = create_engine("torch", tiny_minilm_checkpoint, input_size=(64, 64))
    yield eng
    eng.close()


def test_the_session_steers_the_mask_to_the_instance_the_words_pick(engine, walkers, detector):
    """The tiny test network alone marks nothing useful; with instances, "the person on the far
    left" is the leftmost walker's box, and the results say why."""
    from engine.session import Segmenter

    seg = Segmenter(engine, instances=InstanceEvidence(detector, every=1))
    seg.set_phrase("the person on the far left")
    seg.step(walkers[0])
    result = seg.step(walkers[1])
    chosen = [r for r in result.instances if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["class"] == "person"
    people = [r for r in result.instances if r["class"] == "person"]
    assert chosen[0]["box"][0] == min(r["box"][0] for r in people)  # the leftmost
    x0, y0, x1, y1 = (int(v) for v in chosen[0]["box"])
    ys, xs = np.nonzero(result.mask)
    assert result.found and xs.size and (x0 <= xs).all() and (xs <= x1).all()
    assert (y0 <= ys).all() and (ys <= y1).all()
    y, x = np.unravel_index(np.argmax(result.prob), result.prob.shape)
    assert x0 <= x <= x1 and y0 <= y <= y1
    assert chosen[0]["parts"]["left"] == 1.0
    line = result_lines(result)[-1]
    assert line.startswith("person ") and line.endswith(" . left 1.00") and ": class 0." in line


def test_a_phrase_naming_no_coco_class_leaves_the_mask_alone(engine, walkers, detector):
    from engine.session import Segmenter

    plain, steered = Segmenter(engine), Segmenter(engine, instances=InstanceEvidence(detector))
    for seg in (plain, steered):
        seg.set_phrase("the lamp post")
        seg.step(walkers[0])
    a, b = plain.step(walkers[1]), steered.step(walkers[1])
    assert b.instances == () and np.array_equal(a.mask, b.mask) and np.array_equal(a.prob, b.prob)


def test_boxes_follow_the_flow_between_detector_runs():
    probs = np.zeros((1, len(COCO_CLASSES)), np.float32)
    probs[0, 0] = 0.9
    dets = Detections(boxes=np.array([[20, 10, 40, 50]], np.float32), scores=probs.max(1),
                      classes=probs.argmax(1), probs=probs, frame_hw=(100, 200))  # fmt: skip
    flow = np.zeros((50, 100, 2), np.float32)  # half the frame's size
    flow[5:25, 10:20] = (-2.0, 1.0)  # the box moves 4 px left, 2 px down (frame pixels)
    moved = _carried(dets, flow)
    np.testing.assert_allclose(moved.boxes[0], [16, 12, 36, 52])
    assert _carried(dets, None) is dets


def test_only_a_confident_instance_steers():
    probs = np.zeros((1, len(COCO_CLASSES)), np.float32)
    probs[0, 0] = 0.35  # under MIN_CONFIDENCE
    dets = Detections(boxes=np.array([[20, 10, 40, 50]], np.float32), scores=probs.max(1),
                      classes=probs.argmax(1), probs=probs, frame_hw=(100, 200))  # fmt: skip
    cues = parse_phrase("the person")
    scores = score_instances(dets, cues, np.zeros((100, 200, 3), np.uint8))
    view = InstanceView(dets, scores, choose(scores, cues), True, cues)
    prob = np.full((100, 200), 0.7, np.float32)
    mask = prob > 0.5
    assert fuse(prob, mask, view) == (prob, mask)
    probs[0, 0] = 0.8
    view = InstanceView(dets, scores, choose(scores, cues), True, cues)
    p, m = fuse(prob, mask, view)
    assert m[10:50, 20:40].all() and not m[:, 50:].any() and p[:, 50:].max() < 0.2


def test_the_results_file_holds_the_instances(tmp_path, engine, walkers, detector):
    from engine.outputs import ResultsFileOutput
    from engine.session import Segmenter
    from engine.sources import Frame

    seg = Segmenter(engine, instances=InstanceEvidence(detector))
    seg.set_phrase("the two people walking together")
    out = ResultsFileOutput(tmp_path / "r.jsonl")
    for i, image in enumerate(walkers):
        frame = Frame(image, i, 0.04 * i)
        result = seg.step(frame)
        out.write(image, result, frame)
    out.close()
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    chosen = [r for r in rows[-1]["instances"] if r["chosen"]]
    assert len(chosen) >= 2 and all(r["class"] == "person" for r in chosen)  # a plural
    assert {"instance", "class", "score", "parts", "box", "chosen"} <= set(chosen[0])
