"""Which instance a phrase means: explicit, explainable scores of every detected instance.

:func:`parse_phrase` reads what the words ask for (:class:`Cues`): the category (the head noun
through a lexicon onto COCO's classes), colour words, position and order words ("on the left",
"second from the right", "the biggest", "in front"), motion words ("walking left", "coming
towards", "standing still") and whether the phrase means several ("the people", "all the
cups"). :func:`score_instances` scores every instance of a frame's
:class:`~engine.detector.Detections` on each cue that applies, from its class probabilities,
its own pixels, its place among the same-class instances and the optical flow inside it; the
product is its score, and the parts stay visible (:meth:`InstanceScore.describe`: "person 3:
class 0.92 · left 0.88 · red 0.71"). :func:`referent_map` draws the chosen instances as a map.

numpy and OpenCV only: every backend shares it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.detector import COCO_CLASSES, Detections

__all__ = [
    "BASIC_COLOURS",
    "LEXICON",
    "Cues",
    "InstanceScore",
    "choose",
    "parse_phrase",
    "referent_map",
    "score_instances",
]

_C = {name: i for i, name in enumerate(COCO_CLASSES)}

#: Words -> {COCO class: weight}: the head nouns people use for what COCO's classes hold.
LEXICON: dict[str, dict[str, float]] = {}


def _add(cls: str | dict[str, float], *words: str) -> None:
    weights = {cls: 1.0} if isinstance(cls, str) else cls
    for w in words:
        LEXICON[w] = weights


_add(
    "person",
    "person",
    "people",
    "man",
    "men",
    "woman",
    "women",
    "boy",
    "boys",
    "girl",
    "girls",
    "child",
    "children",
    "kid",
    "kids",
    "baby",
    "babies",
    "adult",
    "adults",
    "guy",
    "guys",
    "lady",
    "ladies",
    "gentleman",
    "pedestrian",
    "pedestrians",
    "cyclist",
    "cyclists",
    "rider",
    "riders",
    "biker",
    "bikers",
    "skier",
    "player",
    "players",
    "driver",
    "walker",
    "runner",
    "jogger",
    "someone",
    "somebody",
    "persons",
    "officer",
    "policeman",
    "worker",
    "student",
    "teenager",
    "toddler",
    "father",
    "mother",
    "dad",
    "mum",
    "mom",
    "human",
    "humans",
    "passenger",
    "passengers",
    "customer",
    "shopper",
    "tourist",
    "couple",
    "crowd",
    "skater",
    "surfer",
    "swimmer",
    "dancer",
    "singer",
    "chef",
    "waiter",
    "doctor",
    "soldier",
)
_add("bicycle", "bicycle", "bicycles", "bike", "bikes", "cycle")
_add(
    {"car": 1.0, "truck": 0.6},
    "car",
    "cars",
    "taxi",
    "cab",
    "sedan",
    "jeep",
    "suv",
    "vehicle",
    "vehicles",
    "automobile",
    "hatchback",
)
_add(
    {"motorcycle": 1.0, "bicycle": 0.3},
    "motorcycle",
    "motorcycles",
    "motorbike",
    "motorbikes",
    "scooter",
    "moped",
)
_add("airplane", "airplane", "aeroplane", "plane", "planes", "jet", "aircraft")
_add("bus", "bus", "buses", "coach")
_add("train", "train", "trains", "tram", "locomotive")
_add({"truck": 1.0, "car": 0.7}, "truck", "trucks", "lorry", "van", "vans", "pickup", "minivan")
_add("boat", "boat", "boats", "ship", "canoe", "kayak", "yacht", "ferry")
_add("traffic light", "light", "lights")
_add("stop sign", "sign")
_add("bench", "bench", "benches")
_add(
    "bird",
    "bird",
    "birds",
    "pigeon",
    "pigeons",
    "duck",
    "ducks",
    "seagull",
    "gull",
    "parrot",
    "chicken",
    "hen",
    "goose",
    "swan",
    "crow",
    "sparrow",
    "owl",
    "eagle",
)
_add("cat", "cat", "cats", "kitten", "kittens", "kitty", "tabby")
_add("dog", "dog", "dogs", "puppy", "puppies", "pup", "doggy", "terrier", "retriever", "poodle")
_add("horse", "horse", "horses", "pony", "foal")
_add("sheep", "sheep", "lamb", "lambs")
_add("cow", "cow", "cows", "cattle", "calf", "bull", "ox")
_add("elephant", "elephant", "elephants")
_add("bear", "bear", "bears")
_add("zebra", "zebra", "zebras")
_add("giraffe", "giraffe", "giraffes")
_add("backpack", "backpack", "rucksack", "backpacks")
_add("umbrella", "umbrella", "umbrellas", "parasol")
_add({"handbag": 1.0, "backpack": 0.6, "suitcase": 0.5}, "handbag", "bag", "bags", "purse")
_add("tie", "tie", "necktie")
_add("suitcase", "suitcase", "luggage", "suitcases")
_add("frisbee", "frisbee")
_add("sports ball", "ball", "balls", "football", "basketball", "volleyball")
_add("kite", "kite")
_add("skateboard", "skateboard")
_add("surfboard", "surfboard")
_add("tennis racket", "racket", "racquet")
_add({"bottle": 1.0, "cup": 0.5}, "bottle", "bottles")
_add({"wine glass": 1.0, "cup": 0.6}, "glass", "glasses")
_add({"cup": 1.0, "bottle": 0.4, "wine glass": 0.4}, "cup", "cups", "mug", "mugs")
_add("fork", "fork")
_add("knife", "knife")
_add("spoon", "spoon")
_add("bowl", "bowl", "bowls")
_add("banana", "banana", "bananas")
_add("apple", "apple", "apples")
_add("sandwich", "sandwich")
_add("orange", "oranges")
_add("broccoli", "broccoli")
_add("carrot", "carrot", "carrots")
_add("pizza", "pizza")
_add("donut", "donut", "doughnut")
_add("cake", "cake")
_add("chair", "chair", "chairs", "stool")
_add("couch", "couch", "sofa")
_add("potted plant", "plant", "plants", "flowerpot")
_add("bed", "bed")
_add("dining table", "table", "tables")
_add("toilet", "toilet")
_add("tv", "tv", "television", "monitor", "screen")
_add("laptop", "laptop", "computer", "notebook")
_add("mouse", "mouse")
_add("remote", "remote")
_add("keyboard", "keyboard")
_add("cell phone", "phone", "phones", "smartphone", "cellphone", "mobile")
_add("microwave", "microwave")
_add("oven", "oven", "stove")
_add("sink", "sink")
_add("refrigerator", "refrigerator", "fridge")
_add("book", "book", "books")
_add("clock", "clock")
_add("vase", "vase")
_add("scissors", "scissors")
_add("teddy bear", "teddy")
_add("toothbrush", "toothbrush")

#: Words that mean several of the head noun.
_PLURAL_WORDS = {"all", "both", "every", "each", "two", "three", "four", "several", "many"}
#: Words after which the head noun's phrase is over ("the man | in the red shirt").
_CUT = {
    "in", "on", "at", "with", "of", "near", "next", "behind", "beside", "under", "over", "by",
    "that", "which", "who", "whose", "to", "from", "into", "onto", "across", "along", "through",
    "wearing", "holding", "carrying", "riding", "walking", "running", "standing", "sitting",
    "is", "are", "was", "he", "she", "it", "they", "and", "while", "moving", "going", "coming",
}  # fmt: skip
#: The eleven basic colour terms (Berlin and Kay) and their sRGB prototypes.
BASIC_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20), "white": (240, 240, 240), "grey": (128, 128, 128),
    "red": (200, 30, 30), "orange": (240, 140, 20), "yellow": (240, 220, 40),
    "green": (40, 150, 50), "blue": (40, 80, 200), "purple": (120, 50, 150),
    "pink": (240, 150, 180), "brown": (120, 75, 35),
}  # fmt: skip
_COLOUR_ALIASES = {"gray": "grey", "silver": "grey", "golden": "yellow", "gold": "yellow",
                   "navy": "blue", "violet": "purple", "beige": "brown", "tan": "brown",
                   "dark": "black", "crimson": "red", "scarlet": "red", "maroon": "red"}  # fmt: skip
#: Instances count as candidates when the detector is at least this share as sure of them as
#: of its best instance of the named class.
CANDIDATE_SHARE = 0.5
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1}


@dataclass(frozen=True)
class Cues:
    """What a phrase asks of an instance (:func:`parse_phrase`).

    Attributes:
        head: The head noun (``None``: none found).
        classes: (80,) float32 weight of each COCO class for the head noun (all zero: the noun
            names no COCO class; the instances cannot answer this phrase).
        colours: Basic colour terms the phrase names.
        side: ``left``, ``right``, ``top``, ``bottom``, ``middle``, ``front`` or ``back``.
        rank: ``k`` of "the k-th from the <side>" (1: the nearest to that side).
        size: ``big`` or ``small`` ("the biggest", "the smaller").
        motion: ``left``, ``right``, ``towards``, ``away``, ``still`` or ``moving``.
        plural: The phrase means every instance that fits ("the people", "all the cups").
    """

    head: str | None
    classes: np.ndarray = field(repr=False)
    colours: tuple[str, ...] = ()
    side: str | None = None
    rank: int = 1
    size: str | None = None
    motion: str | None = None
    plural: bool = False

    @property
    def names_a_class(self) -> bool:
        """Whether the instances can answer the phrase (its head noun names a COCO class)."""
        return bool(self.classes.any())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:'s)?", text.lower())


def _colour_term(word: str) -> str | None:
    word = _COLOUR_ALIASES.get(word, word)
    return word if word in BASIC_COLOURS else None


def parse_phrase(text: str) -> Cues:
    """The cues of a referring expression (rules over its words; see the module docstring)."""
    words = _words(text)
    head, weights = None, np.zeros(len(COCO_CLASSES), np.float32)
    # The head noun: the last lexicon word of the first noun phrase ("the man | in ..."); a
    # possessive ("the man's hat") hands the head on to what follows it.
    span: list[str] = []
    for w in words:
        if w in _CUT and any(x in LEXICON or x.endswith("'s") for x in span):
            break
        span.append(w)
    nouns = [w for w in span if w in LEXICON]
    possessed = [i for i, w in enumerate(span) if w.endswith("'s")]
    if possessed:
        after = span[possessed[-1] + 1 :]
        after_nouns = [w for w in after if w in LEXICON]
        head = after_nouns[-1] if after_nouns else (after[-1] if after else None)
    elif nouns:
        head = nouns[-1]
    elif span:
        head = next((w for w in reversed(span) if w not in ("the", "a", "an", "this", "that")),
                    None)  # fmt: skip
    if head in LEXICON:
        for name, wgt in LEXICON[head].items():
            weights[_C[name]] = wgt
    colours = tuple(dict.fromkeys(c for w in words if (c := _colour_term(w))))
    side, rank, size, motion = None, 1, None, None
    joined = " ".join(words)
    for k, w in enumerate(words):
        if w in ("left", "leftmost"):
            side = side or "left"
        elif w in ("right", "rightmost"):
            side = side or "right"
        elif w in ("middle", "center", "centre", "central"):
            side = side or "middle"
        elif w in ("top", "upper", "topmost"):
            side = side or "top"
        elif w in ("bottom", "lower", "bottommost"):
            side = side or "bottom"
        elif w in ("front", "nearest", "closest", "foreground"):
            side = side or "front"
        elif w in ("back", "farthest", "furthest", "background", "distant"):
            side = side or "back"
        if w in _ORDINALS and "from" in words[k + 1 : k + 4]:  # "the second (car) from the left"
            rank = _ORDINALS[w]
        if w in ("biggest", "largest", "bigger", "larger", "big", "large", "huge", "tall",
                 "tallest", "taller"):  # fmt: skip
            size = size or "big"
        elif w in ("smallest", "smaller", "small", "little", "tiny", "short", "shortest"):
            size = size or "small"
    if re.search(r"\b(walk|walking|walks|moving|moves|going|goes|heading|runs|running|drives|"
                 r"driving|rides|riding|turning|crossing)\b[^.]*\b(left)\b", joined):  # fmt: skip
        motion = "left"
    elif re.search(r"\b(walk|walking|walks|moving|moves|going|goes|heading|runs|running|drives|"
                   r"driving|rides|riding|turning|crossing)\b[^.]*\b(right)\b", joined):  # fmt: skip
        motion = "right"
    elif re.search(r"\b(towards|toward|approaching|coming)\b", joined):
        motion = "towards"
    elif re.search(r"\b(away|leaving)\b", joined):
        motion = "away"
    elif re.search(r"\b(still|stationary|parked|standing|not moving|waiting|sitting|static)\b",
                   joined):  # fmt: skip
        motion = "still"
    elif re.search(r"\b(moving|walking|running|driving|riding|crossing|passing)\b", joined):
        motion = "moving"
    if (
        motion in ("left", "right")
        and side == motion
        and not re.search(r"\b(on|at|from) the (far )?" + motion + r"\b", joined)
    ):
        side = None  # "walking (to the) left" is motion, not place
    plural = bool(_PLURAL_WORDS & set(words)) or (
        head is not None and head.endswith("s") and head in LEXICON and not head.endswith("ss")
        and head not in ("bus", "glasses", "scissors")
    ) or head in ("people", "men", "women", "children", "kids", "cattle", "sheep", "crowd")  # fmt: skip
    if head == "sheep" and not (_PLURAL_WORDS & set(words)):
        plural = False
    return Cues(head=head, classes=weights, colours=colours, side=side, rank=rank, size=size,
                motion=motion, plural=plural)  # fmt: skip


@dataclass(frozen=True)
class InstanceScore:
    """How well one instance fits the phrase.

    Attributes:
        index: The instance's row in the :class:`~engine.detector.Detections`.
        name: Its class name.
        parts: Each cue that applied -> its score in [0, 1] (``class`` always).
        score: The product of the parts.
    """

    index: int
    name: str
    parts: dict[str, float]
    score: float

    def describe(self) -> str:
        """``person 3: class 0.92 · left 0.88 · red 0.71`` (the HUD and the JSONL)."""
        shown = " · ".join(f"{k} {v:.2f}" for k, v in self.parts.items())
        return f"{self.name} {self.index + 1}: {shown}"

    def as_dict(self) -> dict:
        """The JSON form."""
        return {"instance": self.index, "class": self.name, "score": round(self.score, 4),
                "parts": {k: round(v, 4) for k, v in self.parts.items()}}  # fmt: skip


_PROTOS = None


def _colour_shares(frame: np.ndarray, box: np.ndarray) -> dict[str, float]:
    """Share of the box's central pixels nearest each basic colour (CIELAB)."""
    global _PROTOS
    if _PROTOS is None:
        rgb = np.array(list(BASIC_COLOURS.values()), np.uint8)[None, :, ::-1]  # BGR
        _PROTOS = cv2.cvtColor(rgb, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    crop = frame[int(y0 + 0.15 * h) : int(np.ceil(y1 - 0.15 * h)),
                 int(x0 + 0.2 * w) : int(np.ceil(x1 - 0.2 * w))]  # fmt: skip
    if crop.size == 0:
        return dict.fromkeys(BASIC_COLOURS, 0.0)
    if crop.shape[0] * crop.shape[1] > 4096:  # enough pixels to count colours
        f = np.sqrt(4096 / (crop.shape[0] * crop.shape[1]))
        crop = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    labs = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
    nearest = np.argmin(((labs[:, None, :] - _PROTOS[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=len(BASIC_COLOURS)) / len(nearest)
    return dict(zip(BASIC_COLOURS, counts.tolist()))


def _flow_in(flow: np.ndarray, box: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Median (dx, dy) of the flow inside ``box`` (frame pixels per frame), less the scene's."""
    fh, fw = flow.shape[:2]
    sy, sx = fh / frame_hw[0], fw / frame_hw[1]
    x0, y0, x1, y1 = box
    inner = flow[int(y0 * sy) : max(int(y0 * sy) + 1, int(y1 * sy)),
                 int(x0 * sx) : max(int(x0 * sx) + 1, int(x1 * sx))].reshape(-1, 2)  # fmt: skip
    scene = np.median(flow.reshape(-1, 2), axis=0)
    return (np.median(inner, axis=0) - scene) / np.array([sx, sy])


def _ranked(values: np.ndarray, rank: int, descending: bool) -> np.ndarray:
    """1 for the ``rank``-th of ``values`` in the wanted order, falling off for the others."""
    order = np.argsort(-values if descending else values, kind="stable")
    pos = np.empty(len(values), np.int64)
    pos[order] = np.arange(len(values))
    want = (len(values) - 1 if rank < 0 else rank - 1) if len(values) else 0
    return np.exp(-np.abs(pos - want) * 1.2).astype(np.float32)


def score_instances(
    dets: Detections,
    cues: Cues,
    frame: np.ndarray,
    flow: np.ndarray | None = None,
) -> list[InstanceScore]:
    """Every instance's fit to ``cues``, best first.

    Args:
        dets: The frame's instances.
        cues: :func:`parse_phrase` of the phrase.
        frame: (H, W, 3) uint8 BGR, the pixels the colour cue reads.
        flow: (h, w, 2) optical flow (pixels per frame at its own size) for motion words.

    Returns:
        One :class:`InstanceScore` per instance whose class the phrase names, best first
        (none when the phrase names no COCO class).
    """
    if not len(dets) or not cues.names_a_class:
        return []
    cls = (dets.probs * cues.classes[None]).max(axis=1)  # the named class's probability
    # The candidates: instances the detector is at least half as sure of as of its best one of
    # the named class (a doubtful box at the edge must not become "the one on the left").
    cand = np.flatnonzero((cls > 0) & (cls >= CANDIDATE_SHARE * cls.max()))
    if cand.size == 0:
        return []
    parts: dict[str, np.ndarray] = {"class": cls[cand] / max(float(cls[cand].max()), 1e-6)}
    boxes = dets.boxes[cand]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # Place among the instances that are likely the named class (the others do not count).
    if cues.side is not None:
        h, w = dets.frame_hw
        rank = cues.rank
        if cues.side in ("left", "right"):
            place = _ranked(cx, rank, descending=cues.side == "right")
        elif cues.side in ("top", "bottom"):
            place = _ranked(cy, rank, descending=cues.side == "bottom")
        elif cues.side == "front":  # nearer the camera: lower in the frame, larger
            place = _ranked(boxes[:, 3] + 0.25 * np.sqrt(area), rank, descending=True)
        elif cues.side == "back":
            place = _ranked(boxes[:, 3] + 0.25 * np.sqrt(area), rank, descending=False)
        else:  # middle
            d = np.hypot((cx - w / 2) / w, (cy - h / 2) / h)
            place = _ranked(d, rank, descending=False)
        parts[cues.side] = place
    if cues.size is not None:
        parts[cues.size] = _ranked(area, 1, descending=cues.size == "big")
    for colour in cues.colours:
        share = np.array([_colour_shares(frame, b)[colour] for b in boxes], np.float32)
        parts[colour] = np.clip(share / max(float(share.max()), 0.05), 0.05, 1.0)
    if cues.motion is not None and flow is not None:
        v = np.array([_flow_in(flow, b, dets.frame_hw) for b in boxes], np.float32)
        scale = np.sqrt(area) * 0.02 + 0.5  # about 2 % of the box's size per frame counts
        if cues.motion == "left":
            m = 1 / (1 + np.exp(v[:, 0] / scale))
        elif cues.motion == "right":
            m = 1 / (1 + np.exp(-v[:, 0] / scale))
        elif cues.motion == "towards":
            m = 1 / (1 + np.exp(-v[:, 1] / scale))
        elif cues.motion == "away":
            m = 1 / (1 + np.exp(v[:, 1] / scale))
        else:
            speed = np.hypot(v[:, 0], v[:, 1]) / scale
            m = np.exp(-speed) if cues.motion == "still" else 1 - np.exp(-speed)
        parts[cues.motion] = np.clip(m, 0.02, 1.0).astype(np.float32)
    total = np.prod(np.stack(list(parts.values())), axis=0)
    out = [
        InstanceScore(index=int(i), name=COCO_CLASSES[int(dets.classes[i])],
                      parts={k: float(v[j]) for k, v in parts.items()}, score=float(total[j]))
        for j, i in enumerate(cand)
    ]  # fmt: skip
    return sorted(out, key=lambda s: -s.score)


def choose(scores: list[InstanceScore], cues: Cues, *, keep: float = 0.5) -> list[InstanceScore]:
    """The instances the phrase means: the best one, or with a plural all within ``keep`` of it."""
    if not scores:
        return []
    if not cues.plural:
        return scores[:1]
    return [s for s in scores if s.score >= keep * scores[0].score]


def referent_map(
    dets: Detections, chosen: list[InstanceScore], size: tuple[int, int]
) -> np.ndarray:
    """(H, W) float32 in [0, 1] at ``size``: each chosen box, highest at its centre.

    Inside a box the value falls from its score's weight at the centre (1 for the best) to
    half of it at the edges, so the map's peak is the best instance's centre.
    """
    h, w = size
    out = np.zeros((h, w), np.float32)
    if not chosen:
        return out
    fh, fw = dets.frame_hw
    top = max(s.score for s in chosen)
    for s in chosen:
        x0, y0, x1, y1 = dets.boxes[s.index] * np.array([w / fw, h / fh, w / fw, h / fh])
        xa, ya = int(np.floor(x0)), int(np.floor(y0))
        xb, yb = max(xa + 1, int(np.ceil(x1))), max(ya + 1, int(np.ceil(y1)))
        ys, xs = np.mgrid[ya:yb, xa:xb].astype(np.float32)
        dx = np.abs(xs + 0.5 - (x0 + x1) / 2) / max((x1 - x0) / 2, 0.5)
        dy = np.abs(ys + 0.5 - (y0 + y1) / 2) / max((y1 - y0) / 2, 0.5)
        tent = 1.0 - 0.5 * np.clip(np.maximum(dx, dy), 0.0, 1.0)
        value = (s.score / top if top > 0 else 0.0) * tent
        region = out[ya:yb, xa:xb]
        np.maximum(region, value[: region.shape[0], : region.shape[1]], out=region)
    return out
