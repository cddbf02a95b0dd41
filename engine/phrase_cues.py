"""What a referring expression asks of an instance, read from its words (:func:`parse_phrase`).

The category is the head noun, mapped onto COCO's 80 classes through a lexicon of the nouns
people use (:data:`LEXICON`: "cyclist", "kids", "van", "kitten", "mug" ...); then colour words
(onto the eleven basic colour terms, each with the garment it colours: "the red jacket"),
places, one per axis ("at the top right", "second from the left", "far away", "nearest the
camera"), a relation to another thing ("left of the van", "behind the black car"; the
landmark's own words are not the referent's), size words ("the biggest"), motion words
("walking left", "coming towards", "standing still"; a left/right just after a verb of moving
is the way it moves, not where it is) and plurals ("the people", "all the cups"). Rules over
the words, explainable and testable; :mod:`engine.grounding` scores the instances against them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from engine.detector import COCO_CLASSES
from engine.lexicon import class_nouns

__all__ = ["BASIC_COLOURS", "LEXICON", "REGIONS", "Cues", "Relation", "parse_phrase"]

_C = {name: i for i, name in enumerate(COCO_CLASSES)}


#: Words before the head noun that mean several of it ("all the cups", "the two men").
_PLURAL_WORDS = {"all", "both", "every", "each", "two", "three", "four", "several", "many"}
#: Words after which the head noun's phrase is over ("the man | in the red shirt").
_CUT = {
    "in", "on", "at", "with", "of", "near", "next", "behind", "beside", "under", "over", "by",
    "that", "which", "who", "whose", "to", "from", "into", "onto", "across", "along", "through",
    "wearing", "holding", "carrying", "riding", "walking", "running", "standing", "sitting",
    "is", "are", "was", "he", "she", "it", "they", "and", "while", "moving", "going", "coming",
    "above", "below", "beneath", "underneath", "past", "just", "parked", "driving", "leaning",
    "nearest", "closest", "furthest", "farthest", "far", "between", "among", "around", ",",
    "passing", "seen", "peeking", "climbing", "stretching", "looking",
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
                   "dark": "black", "crimson": "red", "scarlet": "red", "maroon": "red",
                   "burgundy": "red", "teal": "blue", "turquoise": "blue", "olive": "green",
                   "lime": "green", "khaki": "brown", "cream": "white", "ivory": "white",
                   "charcoal": "grey", "lilac": "purple", "magenta": "pink"}  # fmt: skip
#: Words that shade the colour word after them ("dark grey", "light blue"): no colour of their own.
_TINTS = {"dark", "light", "pale", "bright", "deep", "navy", "sky", "royal", "baby", "hot"}
#: Garments -> the part of a person's box their colour is read from (:data:`REGIONS`).
_GARMENTS: dict[str, str] = {}
for _region, _words_of in (
    ("upper", "jacket jackets coat coats shirt shirts top tops jumper sweater sweatshirt hoodie "
              "blouse jersey vest cardigan anorak parka fleece scarf tie uniform tshirt tee "
              "blazer gilet raincoat overcoat puffer windbreaker suit"),
    ("lower", "jeans trousers pants skirt shorts leggings shoes boots trainers sneakers socks "
              "tights"),
    ("head", "hat hats cap caps helmet helmets hair haired beanie hood hijab headscarf"),
):  # fmt: skip
    _GARMENTS.update(dict.fromkeys(_words_of.split(), _region))
#: A garment's share of a person's box, as (top, bottom) fractions of its height.
REGIONS: dict[str, tuple[float, float]] = {
    "whole": (0.15, 0.85), "upper": (0.15, 0.55), "lower": (0.5, 0.95), "head": (0.0, 0.2),
}  # fmt: skip
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1}
#: Place words -> (axis, side): horizontal, vertical, depth.
_PLACE_WORDS = {
    "left": ("x", "left"), "leftmost": ("x", "left"), "right": ("x", "right"),
    "rightmost": ("x", "right"), "middle": ("x", "middle"), "center": ("x", "middle"),
    "centre": ("x", "middle"), "central": ("x", "middle"),
    "top": ("y", "top"), "upper": ("y", "top"), "topmost": ("y", "top"),
    "highest": ("y", "top"), "bottom": ("y", "bottom"), "lower": ("y", "bottom"),
    "lowest": ("y", "bottom"), "bottommost": ("y", "bottom"),
    "front": ("z", "front"), "foreground": ("z", "front"), "nearest": ("z", "front"),
    "closest": ("z", "front"), "back": ("z", "back"), "background": ("z", "back"),
    "distance": ("z", "back"), "distant": ("z", "back"), "furthest": ("z", "back"),
    "farthest": ("z", "back"),
}  # fmt: skip


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Verbs of moving: a left/right soon after one is the way it moves, not where it is.
_MOTION_VERBS = _wordset(
    "walk walks walking move moves moving go goes going head heads heading run runs running "
    "drive drives driving ride rides riding cycle cycles cycling turn turns turning cross "
    "crosses crossing travel travels travelling traveling jog jogs jogging stroll strolls "
    "strolling pass passes passing pedal pedalling fly flies flying swim swims swimming "
    "hurry hurrying step stepping rolling racing speeding"
)
#: Words between such a verb and its direction ("walking off to the left").
_MOTION_FILLERS = {"to", "the", "towards", "toward", "off", "slowly", "quickly", "fast",
                   "briskly", "further", "over", "along", "away", "round", "around"}  # fmt: skip
#: Relations to another thing -> their kind ("left of the van", "behind the black car").
_RELATIONS = {
    ("left", "of"): "left", ("right", "of"): "right", ("above",): "above", ("below",): "below",
    ("under",): "below", ("underneath",): "below", ("beneath",): "below", ("behind",): "behind",
    ("front", "of"): "front", ("next", "to"): "near", ("beside",): "near", ("near",): "near",
    ("by",): "near", ("nearest",): "near", ("closest",): "near", ("close", "to"): "near",
    ("alongside",): "near", ("nearest", "to"): "near", ("closest", "to"): "near",
    ("passing",): "near", ("past",): "near",
}  # fmt: skip
_RELATIONS_LONGEST_FIRST = sorted(_RELATIONS.items(), key=lambda kv: -len(kv[0]))
#: What "left of ..." can be relative to besides a thing: the frame or the scene's layout.
_SCENE = _wordset(
    "road street path frame picture image screen centre center group pair three two four row "
    "line grass field table room shot scene view pavement sidewalk pitch court pavement park "
    "square lawn video camera photo ones others"
)
_VIEWER = {"camera", "us", "viewer", "me", "lens"}
_ARTICLES = {"the", "a", "an", "this", "that", "its", "his", "her", "their"}
_PRONOUNS = {"him", "her", "them", "it", "me", "us", "you", "itself", "himself", "herself"}


@dataclass(frozen=True)
class Relation:
    """Where the referent is relative to another thing ("left of the van").

    Attributes:
        kind: ``left``, ``right``, ``above``, ``below``, ``front`` (nearer the camera than it),
            ``behind`` or ``near``.
        landmark: The other thing's head noun.
        classes: (80,) its COCO class weights (all zero: no detector class; it cannot be placed).
    """

    kind: str
    landmark: str
    classes: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Cues:
    """What a phrase asks of an instance (:func:`parse_phrase`).

    Attributes:
        head: The head noun (``None``: none found).
        classes: (80,) float32 weight of each COCO class for the head noun (all zero: the noun
            names no COCO class; the instances cannot answer this phrase).
        colours: Basic colour terms the phrase gives the referent (not those of a landmark:
            "behind the black car").
        colour_regions: Per colour, the part of a person's box it is read from
            (:data:`REGIONS`: "whole", or "upper" for "the red jacket", "lower" for "blue
            jeans", "head" for "a white hat").
        places: ``(side, rank)`` for each axis the phrase places the referent on, horizontal
            (``left``, ``right``, ``middle``), vertical (``top``, ``bottom``) and depth
            (``front``, ``back``): "the man at the top right" -> (("right", 1), ("top", 1));
            rank ``k`` of "the k-th from the left" (1: the nearest to that side, -1: the last).
        relation: Where it is relative to another thing, or ``None``.
        size: ``big`` or ``small`` ("the biggest", "the smaller").
        motion: ``left``, ``right``, ``towards``, ``away``, ``still`` or ``moving``.
        plural: The phrase means every instance that fits ("the people", "all the cups").
    """

    head: str | None
    classes: np.ndarray = field(repr=False)
    colours: tuple[str, ...] = ()
    colour_regions: tuple[str, ...] = ()
    places: tuple[tuple[str, int], ...] = ()
    relation: Relation | None = None
    size: str | None = None
    motion: str | None = None
    plural: bool = False

    @property
    def names_a_class(self) -> bool:
        """Whether the instances can answer the phrase (its head noun names a COCO class)."""
        return bool(self.classes.any())


#: Words -> {COCO class: weight}: the head nouns people use for what COCO's classes hold,
#: with their regular plurals ("the ships"), never over a verb of moving ("the boy who cycles").
LEXICON: dict[str, dict[str, float]] = class_nouns(exclude=_MOTION_VERBS)


#: Two-word names whose last word alone names another class ("hot dog" is no dog).
_COMPOUNDS = {"teddy bear": "teddybear", "hot dog": "hotdog", "hot dogs": "hotdogs",
              "t-shirt": "tshirt", "t shirt": "tshirt"}  # fmt: skip


def _words(text: str) -> list[str]:
    text = text.lower()
    for compound, word in _COMPOUNDS.items():
        text = re.sub(rf"\b{compound}\b", word, text)
    return re.findall(r"[a-z]+(?:'s)?|,", text)


def _colour_term(word: str) -> str | None:
    if word.endswith("ish") and len(word) > 5:  # "reddish", "bluish", "greyish": the colour
        base = word[:-3]
        for stem in (base, base + "e", base[:-1]):  # green-, blu(e)-, red(d)-
            if _colour_term(stem):
                return _colour_term(stem)
        return None
    word = _COLOUR_ALIASES.get(word, word)
    return word if word in BASIC_COLOURS else None


def _class_weights(noun: str | None) -> np.ndarray:
    weights = np.zeros(len(COCO_CLASSES), np.float32)
    for name, wgt in LEXICON.get(noun or "", {}).items():
        weights[_C[name]] = wgt
    return weights


def _head(words: list[str]) -> tuple[str | None, list[str]]:
    """The head noun, and the words before it (where "all", "both", "two" make it plural).

    The head is the last lexicon word of the first noun phrase ("the man | in ..."); a
    possessive ("the man's hat") hands the head on to what follows it.
    """
    span: list[str] = []
    for w in words:
        if w in _CUT and any(x in LEXICON or x.endswith("'s") for x in span):
            break
        span.append(w)
    nouns = [i for i, w in enumerate(span) if w in LEXICON]
    possessed = [i for i, w in enumerate(span) if w.endswith("'s")]
    if possessed:
        after = span[possessed[-1] + 1 :]
        after_nouns = [w for w in after if w in LEXICON]
        return (after_nouns[-1] if after_nouns else (after[-1] if after else None)), span
    if nouns:
        return span[nouns[-1]], span[: nouns[-1]]
    # No known noun: the last word of the first noun phrase that is not a place or colour
    # word; that phrase ends at a cut word or a participle ("the rabbit | peeking out").
    first: list[str] = []
    for w in words:
        content = [x for x in first if x not in _ARTICLES]
        if content and (w in _CUT or w.endswith("ing")):
            break
        first.append(w)
    for w in reversed(first):
        if w not in _ARTICLES and w not in _PLACE_WORDS and not _colour_term(w) and w != ",":
            return w, first
    return None, first


def _motion(words: list[str], used: list[bool]) -> str | None:
    """The way the referent moves; marks the direction words it reads as ``used``."""
    joined = " ".join(words)
    m = re.search(r"\bfrom (the )?(left|right) to (the )?(left|right)\b", joined)
    if m:
        start = len(joined[: m.start()].split())
        for k in range(start, start + len(m.group(0).split())):
            used[k] = True
        return m.group(4)
    for i, w in enumerate(words):
        if w in ("leftward", "leftwards", "westward"):
            used[i] = True
            return "left"
        if w in ("rightward", "rightwards", "eastward"):
            used[i] = True
            return "right"
        if w in _MOTION_VERBS:
            for j in range(i + 1, min(i + 6, len(words))):
                if words[j] in ("left", "right"):
                    used[j] = True
                    return words[j]
                if words[j] not in _MOTION_FILLERS:
                    break
    if re.search(r"\b(coming|approaching|comes|approaches)\b", joined) or re.search(
        r"\btowards? (the )?(camera|us|viewer|me)\b", joined
    ):
        return "towards"
    if re.search(r"\b(away from|receding|leaving)\b", joined) or re.search(
        r"\b(walk|walks|walking|moving|going|heading|driving|riding|running|cycling) away\b",
        joined,
    ):
        return "away"
    if re.search(r"\b(still|stationary|parked|standing|not moving|waiting|sitting|static|"
                 r"stopped|lying|resting|leaning)\b", joined):  # fmt: skip
        return "still"
    if _MOTION_VERBS & set(words):
        return "moving"
    return None


def _relation(words: list[str], used: list[bool], head_end: int) -> Relation | None:
    """The first relation to another thing after the head noun.

    Marks its words as ``used``: the landmark's own colour or size is not the referent's.
    """
    for i in range(head_end, len(words)):
        if used[i]:
            continue
        for pattern, kind in _RELATIONS_LONGEST_FIRST:
            if tuple(words[i : i + len(pattern)]) != pattern:
                continue
            # The landmark: the noun phrase after the relation word.
            start = end = i + len(pattern)
            while end < len(words) and words[end] not in _CUT and words[end] not in _PLACE_WORDS:
                end += 1
            np_words = [w for w in words[start:end] if w not in _ARTICLES]
            if not np_words:
                continue  # "seen from behind": no other thing
            if kind == "near" and any(w in _VIEWER for w in np_words):
                continue  # "nearest the camera": a place (front), read by _places
            if kind in ("left", "right") and (not np_words or np_words[-1] in _SCENE):
                continue  # "left of centre", "on the right of the road": a place
            nouns = [w for w in np_words if w in LEXICON]
            for k in range(i, end):
                used[k] = True
            if words[i - 1 : i] == ["right"] and kind != "right":
                used[i - 1] = True  # "right beside him": "right" means just
            if np_words[0] in _PRONOUNS or not nouns:
                return Relation(kind, np_words[-1], _class_weights(None))
            return Relation(kind, nouns[-1], _class_weights(nouns[-1]))
    return None


def _places(words: list[str], used: list[bool]) -> tuple[tuple[str, int], ...]:
    """``(side, rank)`` per axis from the place words not yet read as motion or relation."""
    joined = " ".join(w if not u else "_" for w, u in zip(words, used))
    found: dict[str, tuple[str, int]] = {}
    if re.search(r"\bfar (away|off|back|up|down)\b|\bin the distance\b|\bfar end\b", joined):
        found["z"] = ("back", 1)
    if re.search(r"\b(nearest|closest|nearer|closer) (to )?(the )?(camera|us|viewer|me)\b", joined):
        found["z"] = ("front", 1)
    for k, w in enumerate(words):
        if used[k] or w not in _PLACE_WORDS:
            continue
        axis, side = _PLACE_WORDS[w]
        after = words[k + 1 : k + 3]
        if w in ("furthest", "farthest") and (
            after == ["to", "the"] or after[:1] in (["left"], ["right"])
        ):
            continue  # "furthest to the left": an intensifier of the side after it
        if w in ("nearest", "closest") and after[:1] in (["the"], ["to"], ["a"]):
            continue  # "nearest the grass": a relation (read by _relation), not a depth
        if axis in found:
            continue
        rank = 1
        for j in range(max(0, k - 4), k):
            if words[j] in _ORDINALS and "from" in words[j + 1 : k]:
                rank = _ORDINALS[words[j]]
        found[axis] = (side, rank)
    return tuple(found[a] for a in ("x", "y", "z") if a in found)


def _colours(words: list[str], used: list[bool]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The referent's colour words and the garment each is read from."""
    colours: dict[str, str] = {}
    for k, w in enumerate(words):
        if used[k]:
            continue
        term = _colour_term(w)
        if term is None:
            continue
        if w in _TINTS and k + 1 < len(words) and _colour_term(words[k + 1]):
            continue  # "dark grey", "navy blue": the shade of the colour after it
        region = "whole"
        for j in range(k + 1, min(k + 5, len(words))):
            if words[j] in _GARMENTS:
                region = _GARMENTS[words[j]]
                used[j] = True  # "the red top" is a garment, not a place
                break
            if words[j] in _CUT and words[j] != "and":
                break
        colours.setdefault(term, region)
    return tuple(colours), tuple(colours.values())


def parse_phrase(text: str) -> Cues:
    """The cues of a referring expression (rules over its words; see the module docstring)."""
    words = _words(text)
    head, before_head = _head(words)
    weights = _class_weights(head)
    head_end = words.index(head) + 1 if head in words else 0
    used = [False] * len(words)
    motion = _motion(words, used)
    relation = _relation(words, used, head_end)
    colours, regions = _colours(words, used)
    places = _places(words, used)
    size = None
    for k, w in enumerate(words):
        if used[k]:
            continue
        if w in ("biggest", "largest", "bigger", "larger", "big", "large", "huge", "tall",
                 "tallest", "taller"):  # fmt: skip
            size = size or "big"
        elif w in ("smallest", "smaller", "small", "little", "tiny", "short", "shortest"):
            size = size or "small"
    plural_noun = head is not None and (
        head in ("people", "men", "women", "children", "kids", "cattle", "crowd")
        or (head.endswith("s") and head in LEXICON and not head.endswith("ss")
            and head not in ("bus", "glasses", "scissors"))
    )  # fmt: skip
    # "the dogs", "all the cups", "the two men" mean several; "one of the two dogs" means one
    plural = "one" not in before_head and (plural_noun or bool(_PLURAL_WORDS & set(before_head)))
    return Cues(head=head, classes=weights, colours=colours, colour_regions=regions,
                places=places, relation=relation, size=size, motion=motion,
                plural=plural)  # fmt: skip
