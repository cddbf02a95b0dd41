"""Which instance a phrase means: the cues read from the words, and each cue's score."""

from __future__ import annotations

import numpy as np
import pytest

from engine.detector import COCO_CLASSES, Detections
from engine.grounding import choose, parse_phrase, referent_map, score_instances

C = {n: i for i, n in enumerate(COCO_CLASSES)}


@pytest.mark.parametrize(
    ("phrase", "head", "cls", "expect"),
    [
        ("the man on the far right", "man", "person", {"side": "right"}),
        ("the white van", "van", "truck", {"colours": ("white",)}),
        ("the person in the blue jacket", "person", "person", {"colours": ("blue",)}),
        ("the smaller dog", "dog", "dog", {"size": "small"}),
        ("the people crossing the road", "people", "person", {"plural": True}),
        ("all the cups", "cups", "cup", {"plural": True}),
        ("the second car from the left", "car", "car", {"side": "left", "rank": 2}),
        ("the woman walking to the left", "woman", "person", {"side": None, "motion": "left"}),
        ("the man on the left walking to the right", "man", "person",
         {"side": "left", "motion": "right"}),
        ("the car parked on the right", "car", "car", {"side": "right", "motion": "still"}),
        ("the kitten in front", "kitten", "cat", {"side": "front"}),
    ],
)  # fmt: skip
def test_cues(phrase, head, cls, expect):
    cues = parse_phrase(phrase)
    assert cues.head == head and int(np.argmax(cues.classes)) == C[cls]
    for key, value in expect.items():
        assert getattr(cues, key) == value, (phrase, key)


@pytest.mark.parametrize("phrase", ["the tree", "the cyclist's helmet", "the rock on the left"])
def test_a_phrase_that_names_no_coco_class_gets_no_instance(phrase):
    cues = parse_phrase(phrase)
    assert not cues.names_a_class
    assert score_instances(_dets([("person", (0, 0, 10, 20))]), cues, _frame()) == []


def _frame(h: int = 120, w: int = 200) -> np.ndarray:
    return np.full((h, w, 3), 90, np.uint8)


def _dets(items, frame_hw=(120, 200), prob: float = 0.8) -> Detections:
    boxes = np.array([b for _, b in items], np.float32)
    probs = np.zeros((len(items), len(COCO_CLASSES)), np.float32)
    for i, (name, _) in enumerate(items):
        probs[i, C[name]] = prob
    return Detections(boxes=boxes, scores=probs.max(axis=1), classes=probs.argmax(axis=1),
                      probs=probs, frame_hw=frame_hw)  # fmt: skip


def test_position_order_size_and_class_choose():
    dets = _dets([("person", (10, 40, 30, 100)), ("person", (90, 40, 110, 100)),
                  ("person", (160, 20, 195, 110)), ("car", (40, 60, 80, 90))])  # fmt: skip
    frame = _frame()
    best = lambda p: choose(score_instances(dets, parse_phrase(p), frame), parse_phrase(p))  # noqa: E731
    assert [s.index for s in best("the man on the left")] == [0]
    assert [s.index for s in best("the person on the right")] == [2]
    assert [s.index for s in best("the second person from the left")] == [1]
    assert [s.index for s in best("the biggest person")] == [2]
    assert [s.index for s in best("the car")] == [3]
    assert sorted(s.index for s in best("the people")) == [0, 1, 2]
    scored = score_instances(dets, parse_phrase("the man on the left"), frame)
    assert set(scored[0].parts) == {"class", "left"}
    assert scored[0].describe().startswith("person 1: class 1.00 · left 1.00")


def test_colour_words_read_the_instances_own_pixels():
    frame = _frame()
    frame[40:100, 10:30] = (30, 30, 200)  # BGR red
    frame[40:100, 90:110] = (200, 60, 40)  # BGR blue
    dets = _dets([("person", (10, 40, 30, 100)), ("person", (90, 40, 110, 100))])
    for phrase, want in (("the person in red", 0), ("the man in the blue shirt", 1)):
        cues = parse_phrase(phrase)
        assert choose(score_instances(dets, cues, frame), cues)[0].index == want, phrase


def test_motion_words_read_the_flow_inside_each_instance():
    dets = _dets([("person", (10, 40, 30, 100)), ("person", (90, 40, 110, 100))])
    flow = np.zeros((60, 100, 2), np.float32)  # half the frame's size
    flow[20:50, 5:15, 0] = -3.0  # the left person walks left
    for phrase, want in (("the person walking left", 0), ("the person standing still", 1)):
        cues = parse_phrase(phrase)
        assert choose(score_instances(dets, cues, _frame(), flow), cues)[0].index == want, phrase


def test_the_referent_map_peaks_at_the_chosen_instance():
    dets = _dets([("person", (10, 40, 30, 100)), ("person", (90, 40, 110, 100))])
    cues = parse_phrase("the person on the right")
    chosen = choose(score_instances(dets, cues, _frame()), cues)
    m = referent_map(dets, chosen, (60, 100))  # half size
    y, x = np.unravel_index(np.argmax(m), m.shape)
    assert 45 <= x <= 55 and 20 <= y <= 50
    assert m[:, :40].max() == 0 and m[m > 0].min() >= 0.5 and m.max() > 0.9
