"""Referring expressions: the fewest attributes that single out an object, in varied words.

Every expression names the object's shape (the head noun) plus the smallest set of further
attributes (``size``, ``colour``, ``motion``) that no other object in the clip shares. Each
canonical value has several surface forms chosen by the clip's random generator, so the same
referent is worded differently from clip to clip:

    the blue star / the small red disc / the square heading left / the green ring that is still
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from training.synthetic.colours import COLOURS
from training.synthetic.shapes import SHAPES

__all__ = [
    "ATTRIBUTES",
    "LEXICON",
    "MOTIONS",
    "SIZES",
    "choose_attributes",
    "render_expression",
]

#: Motion labels. ``static`` objects do not move relative to the scene.
MOTIONS = ("static", "left", "right", "up", "down")
#: Size labels; every ``big`` object is at least 1.4x any ``small`` one.
SIZES = ("small", "big")
#: Attributes an expression may add to the shape, in the order they are spoken.
ATTRIBUTES = ("size", "colour", "motion")

#: Attribute -> canonical value -> surface forms.
LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {
        "circle": ("circle", "disc", "round shape"),
        "square": ("square", "box", "block"),
        "triangle": ("triangle", "triangular shape"),
        "star": ("star", "star shape"),
        "ring": ("ring", "donut", "hoop"),
        "cross": ("cross", "plus sign", "plus shape"),
        "diamond": ("diamond", "rhombus"),
    },
    "size": {"small": ("small", "little", "tiny"), "big": ("big", "large")},
    "colour": {
        "red": ("red",),
        "green": ("green",),
        "blue": ("blue",),
        "yellow": ("yellow",),
        "orange": ("orange",),
        "purple": ("purple", "violet"),
        "cyan": ("cyan", "turquoise"),
        "pink": ("pink",),
        "white": ("white",),
        "black": ("black",),
    },
    # Phrases after the noun.
    "motion": {
        "static": ("that is not moving", "that is still", "that stays still", "standing still"),
        "left": ("moving left", "going left", "heading left", "that moves to the left"),
        "right": ("moving right", "going right", "heading right", "that moves to the right"),
        "up": ("moving up", "going up", "heading upwards", "that moves up"),
        "down": ("moving down", "going down", "heading downwards", "that moves down"),
    },
    # Adjectives before the noun, for static objects only.
    "motion_adjective": {"static": ("static", "still", "motionless")},
}

assert set(LEXICON["shape"]) == set(SHAPES) and set(LEXICON["colour"]) == set(COLOURS)


def choose_attributes(
    objects: Sequence[Mapping[str, str]],
    index: int,
    *,
    allowed: Sequence[str],
    rng: np.random.Generator,
) -> tuple[str, ...]:
    """The fewest attributes (beyond shape) that single out ``objects[index]``.

    Args:
        objects: Every object of the clip as ``{"shape", "size", "colour", "motion"} -> value``.
        index: Position of the referred object in ``objects``.
        allowed: Attributes the expression may use, a subset of :data:`ATTRIBUTES`.
        rng: Breaks ties between equally short choices.

    Returns:
        Attribute names in :data:`ATTRIBUTES` order (possibly empty: the shape is unique).

    Raises:
        ValueError: No combination of ``allowed`` attributes singles the object out.
    """
    bad = set(allowed) - set(ATTRIBUTES)
    if bad:
        raise ValueError(f"unknown attributes {sorted(bad)}; valid: {', '.join(ATTRIBUTES)}")
    target = objects[index]
    ordered = [a for a in ATTRIBUTES if a in allowed]
    for k in range(len(ordered) + 1):
        unique = []
        for combo in combinations(ordered, k):
            keys = ("shape", *combo)
            matches = sum(all(o[a] == target[a] for a in keys) for o in objects)
            if matches == 1:
                unique.append(combo)
        if unique:
            return unique[int(rng.integers(len(unique)))]
    raise ValueError(
        f"object {index} ({dict(target)}) cannot be singled out with attributes {list(allowed)}"
    )


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def render_expression(
    attributes: Mapping[str, str], used: Sequence[str], *, rng: np.random.Generator
) -> str:
    """Word the shape plus the ``used`` attributes of an object.

    Args:
        attributes: The object's canonical attributes (``shape`` and every name in ``used``).
        used: Attribute names to mention (from :func:`choose_attributes`).
        rng: Chooses synonyms and word order.

    Returns:
        A lower-case expression such as ``"the little red disc moving left"``.
    """
    words = ["the"]
    motion_after = None
    if "motion" in used:
        motion = attributes["motion"]
        if motion in LEXICON["motion_adjective"] and rng.random() < 0.3:
            words.append(_pick(LEXICON["motion_adjective"][motion], rng))
        else:
            motion_after = _pick(LEXICON["motion"][motion], rng)
    if "size" in used:
        words.append(_pick(LEXICON["size"][attributes["size"]], rng))
    if "colour" in used:
        words.append(_pick(LEXICON["colour"][attributes["colour"]], rng))
    words.append(_pick(LEXICON["shape"][attributes["shape"]], rng))
    if motion_after:
        words.append(motion_after)
    return " ".join(words)
