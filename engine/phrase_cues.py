"""What a referring expression asks of an instance, read from its words (:func:`parse_phrase`).

The category is the head noun, mapped onto COCO's 80 classes through a lexicon of the nouns
people use (:data:`LEXICON`: "cyclist", "kids", "van", "kitten", "mug" ...); then colour words
(onto the eleven basic colour terms), position and order words ("on the left", "second from the
right", "in front"), size words ("the biggest"), motion words ("walking left", "coming
towards", "standing still") and plurals ("the people", "all the cups"). Rules over the words,
explainable and testable; :mod:`engine.grounding` scores the instances against them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from engine.detector import COCO_CLASSES

__all__ = ["BASIC_COLOURS", "LEXICON", "Cues", "parse_phrase"]

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
