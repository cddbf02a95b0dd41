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
        ("the man on the far right", "man", "person", {"places": (("right", 1),)}),
        ("the white van", "van", "truck", {"colours": ("white",)}),
        ("the person in the blue jacket", "person", "person",
         {"colours": ("blue",), "colour_regions": ("upper",)}),
        ("the smaller dog", "dog", "dog", {"size": "small"}),
        ("the people crossing the road", "people", "person", {"plural": True}),
        ("all the cups", "cups", "cup", {"plural": True}),
        ("the second car from the left", "car", "car", {"places": (("left", 2),)}),
        ("the woman walking to the left", "woman", "person", {"places": (), "motion": "left"}),
        ("the man on the left walking to the right", "man", "person",
         {"places": (("left", 1),), "motion": "right"}),
        ("the man walking right on the far left", "man", "person",
         {"places": (("left", 1),), "motion": "right"}),
        ("the car parked on the right", "car", "car", {"places": (("right", 1),), "motion": "still"}),
        ("the kitten in front", "kitten", "cat", {"places": (("front", 1),)}),
        ("the woman in red at the top right", "woman", "person",
         {"places": (("right", 1), ("top", 1)), "colours": ("red",)}),
        ("the woman in the red top on the left", "woman", "person",
         {"places": (("left", 1),), "colour_regions": ("upper",)}),
        ("the man in the black coat furthest to the left", "man", "person",
         {"places": (("left", 1),)}),
        ("the tiny person far away", "person", "person",
         {"places": (("back", 1),), "size": "small", "motion": None}),
        ("the boy nearest the camera", "boy", "person", {"places": (("front", 1),)}),
        ("the nearest car", "car", "car", {"places": (("front", 1),)}),
        ("the man nearest the grass", "man", "person", {"places": ()}),
        ("the rightmost of the three men", "men", "person", {"places": (("right", 1),)}),
        ("the man in navy, rightmost of the three", "man", "person",
         {"places": (("right", 1),), "plural": False, "colours": ("blue",)}),
        ("the dark grey car in the distance", "car", "car",
         {"colours": ("grey",), "places": (("back", 1),)}),
        ("the girl in blue jeans and a white hat", "girl", "person",
         {"colours": ("blue", "white"), "colour_regions": ("lower", "head")}),
        ("the man crossing from left to right", "man", "person", {"motion": "right", "places": ()}),
        ("the orange on the plate", "orange", "orange", {}),
        ("the orange cat", "cat", "cat", {"colours": ("orange",)}),
        ("the teddy bear on the bed", "teddybear", "teddy bear", {}),
        ("the hot dog", "hotdog", "hot dog", {}),
        ("the left one of the two dogs", "dogs", "dog", {"plural": False, "places": (("left", 1),)}),
        ("all the sheep", "sheep", "sheep", {"plural": True}),
        ("the sheep", "sheep", "sheep", {"plural": False}),
        ("the man in the red t-shirt", "man", "person", {"colour_regions": ("upper",)}),
        # regular plurals of listed nouns, derived by spelling rules
        ("the ships on the left", "ships", "boat", {"plural": True, "places": (("left", 1),)}),
        ("the two sofas", "sofas", "couch", {"plural": True}),
        ("all the knives", "knives", "knife", {"plural": True}),
        ("the lorries", "lorries", "truck", {"plural": True}),
        ("the boy who cycles to the left", "boy", "person", {"plural": False, "motion": "left"}),
        ("the motorcyclist on the right", "motorcyclist", "person", {"places": (("right", 1),)}),
        ("the two labradors", "labradors", "dog", {"plural": True}),
        ("the ambulance", "ambulance", "truck", {}),
        ("the laptop on the desk", "laptop", "laptop", {}),
        ("the man in the reddish jacket", "man", "person",
         {"colours": ("red",), "colour_regions": ("upper",)}),
        ("the bluish car", "car", "car", {"colours": ("blue",)}),
        ("the whitish van", "van", "truck", {"colours": ("white",)}),
    ],
)  # fmt: skip
def test_cues(phrase, head, cls, expect):
    cues = parse_phrase(phrase)
    assert cues.head == head and int(np.argmax(cues.classes)) == C[cls]
    for key, value in expect.items():
        assert getattr(cues, key) == value, (phrase, key, getattr(cues, key))


@pytest.mark.parametrize(
    ("phrase", "kind", "landmark", "coco", "colours", "places"),
    [
        ("the dark car half hidden behind the black car", "behind", "car", True, ("black",), ()),
        ("the dog to the left of the red car", "left", "car", True, (), ()),
        ("the man walking left just right of the lamp post", "right", "post", False, (), ()),
        ("the cup next to the laptop on the right", "near", "laptop", True, (), (("right", 1),)),
        ("the man left of centre", None, None, None, (), (("left", 1),)),
        ("the van seen from behind on the left", None, None, None, (), (("left", 1),)),
        ("the car right beside him on the right", "near", "him", False, (), (("right", 1),)),
    ],
)  # fmt: skip
def test_relations_to_other_things(phrase, kind, landmark, coco, colours, places):
    """A landmark's own words (its colour, its side) are not the referent's."""
    cues = parse_phrase(phrase)
    if kind is None:
        assert cues.relation is None
    else:
        rel = cues.relation
        assert (rel.kind, rel.landmark, bool(rel.classes.any())) == (kind, landmark, coco)
    assert cues.colours == colours and cues.places == places, cues


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


def test_colour_naming_agrees_with_the_xkcd_colour_survey():
    """The survey's colours whose names end in a basic term get that term (CC0, matplotlib)."""
    import matplotlib.colors as mc

    from engine.grounding import colour_memberships
    from engine.phrase_cues import BASIC_COLOURS

    names, rgb = [], []
    for key, value in mc.XKCD_COLORS.items():
        last = key.split(":")[1].split()[-1].replace("gray", "grey")
        if last in BASIC_COLOURS:
            names.append(last)
            rgb.append(np.array(mc.to_rgb(value)) * 255)
    bgr = np.array(rgb)[:, ::-1].round().astype(np.uint8)
    member = colour_memberships(bgr)
    assert np.allclose(sum(member.values()), 1.0, atol=1e-5)
    said = np.array(list(member))[np.argmax(np.stack(list(member.values()), 1), axis=1)]
    names = np.array(names)
    assert (said == names).mean() >= 0.8
    for term in ("red", "yellow", "green", "blue"):
        assert (said[names == term] == term).mean() >= 0.8, term


def test_garment_colours_are_read_from_their_part_of_a_person():
    frame = _frame()
    frame[40:70, 10:30], frame[70:100, 10:30] = (30, 30, 200), (200, 60, 40)  # red top, blue legs
    frame[40:70, 90:110], frame[70:100, 90:110] = (200, 60, 40), (30, 30, 200)  # the reverse
    dets = _dets([("person", (10, 40, 30, 100)), ("person", (90, 40, 110, 100))])
    for phrase, want in (("the man in the red jacket", 0), ("the man in red trousers", 1),
                         ("the woman in the blue top", 1), ("the boy in blue jeans", 0)):  # fmt: skip
        cues = parse_phrase(phrase)
        assert choose(score_instances(dets, cues, frame), cues)[0].index == want, phrase


def test_a_doubtful_box_at_the_edge_does_not_become_the_one_on_the_left():
    dets = _dets([("person", (2, 40, 12, 60)), ("person", (40, 40, 60, 100)),
                  ("person", (120, 40, 140, 100))])  # fmt: skip
    dets.probs[0] *= 0.55  # the detector is barely sure of the small box at the edge
    cues = parse_phrase("the man on the left")
    scores = score_instances(dets, cues, _frame())
    assert scores[0].index == 1
    assert {s.index: s.parts["left"] for s in scores}[0] == 1.0  # it is leftmost; just doubtful


def test_a_relation_to_another_detected_thing_chooses():
    dets = _dets([("person", (10, 40, 30, 100)), ("car", (60, 50, 120, 100)),
                  ("person", (150, 40, 170, 100))])  # fmt: skip
    frame = _frame()
    for phrase, want in (("the person left of the car", 0), ("the man to the right of the car", 2)):
        cues = parse_phrase(phrase)
        best = choose(score_instances(dets, cues, frame), cues)[0]
        assert best.index == want and any(k.endswith("of car") for k in best.parts), phrase
    cues = parse_phrase("the person behind the car")
    assert "behind car" in score_instances(dets, cues, frame)[0].parts
    # A landmark the detector cannot see leaves the choice to the other words.
    cues = parse_phrase("the man on the right, left of the lamp post")
    assert choose(score_instances(dets, cues, frame), cues)[0].index == 2
