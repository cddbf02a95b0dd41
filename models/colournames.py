"""Colour words -> colours: real knowledge a small sentence encoder lacks (torch-free).

MiniLM-L6 knows that "crimson" and "red" are related words, but not which colour "lilac" or
"amber" is: a linear probe of its features trained on one set of colour words names the colour
of unseen colour words barely above chance (``docs/TRAINING.md``, "Colour words"). Colour names
are facts, and good lists of them ship with matplotlib, already a dependency:

* the W3C CSS colour keywords (``matplotlib.colors.CSS4_COLORS``, 148 names);
* the xkcd colour survey (``matplotlib.colors.XKCD_COLORS``, 949 names, CC0), the colours
  about 220 000 people gave those names.

:func:`colour_table` gives every WordPiece token that is a colour name its CIELAB colour; the
text encoder adds a learned embedding of it to that token's features, so a colour word the
training data never used still arrives as a point of the colour space the network has learned.
Only single-piece names count, xkcd first (it is how people name colours), CSS second, and not
the words whose everyday sense is a thing rather than a colour (:data:`NOT_COLOURS`: "grass",
"sky", "wine", "apple", ...), which would otherwise tint every phrase that mentions them.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

__all__ = ["NOT_COLOURS", "colour_names", "colour_table", "lab"]

#: Single-word colour names of the two lists whose everyday sense is an object, a material or
#: a place (our own judgement, written once): they get no colour.
NOT_COLOURS = frozenset(
    [
        "adobe",
        "algae",
        "apple",
        "banana",
        "barney",
        "berry",
        "bile",
        "bland",
        "blood",
        "brick",
        "bruise",
        "buff",
        "butter",
        "camel",
        "cement",
        "chocolate",
        "cinnamon",
        "clay",
        "cocoa",
        "coffee",
        "dark",
        "denim",
        "desert",
        "dirt",
        "dusk",
        "dust",
        "earth",
        "evergreen",
        "fern",
        "forest",
        "grape",
        "grass",
        "heather",
        "ice",
        "iris",
        "leaf",
        "leather",
        "linen",
        "lipstick",
        "mahogany",
        "maize",
        "mango",
        "marine",
        "midnight",
        "moss",
        "mud",
        "mushroom",
        "ocean",
        "pale",
        "parchment",
        "pea",
        "pear",
        "peru",
        "petrol",
        "pine",
        "rosa",
        "rouge",
        "royal",
        "sage",
        "sandstone",
        "sand",
        "sandy",
        "sea",
        "shamrock",
        "shit",
        "sky",
        "slate",
        "snow",
        "spruce",
        "squash",
        "steel",
        "stone",
        "straw",
        "strawberry",
        "swamp",
        "tea",
        "thistle",
        "tomato",
        "twilight",
        "velvet",
        "vomit",
        "wheat",
        "wine",
        "pumpkin",
    ]
)
#: Adjective endings tried when a word is not a name itself ("golden" -> "gold").
_SUFFIXES = ("ish", "en", "y")


def colour_names() -> dict[str, tuple[float, float, float]]:
    """Name -> RGB in [0, 1] from the xkcd survey (first) and the CSS keywords."""
    from matplotlib import colors

    out: dict[str, tuple[float, float, float]] = {}
    for name, value in colors.CSS4_COLORS.items():
        out[name] = colors.to_rgb(value)
    for name, value in colors.XKCD_COLORS.items():  # "xkcd:sky blue" -> "sky blue"
        out[name.split(":", 1)[1]] = colors.to_rgb(value)
    return {k: v for k, v in out.items() if k not in NOT_COLOURS}


def lab(rgb: tuple[float, float, float]) -> np.ndarray:
    """CIELAB of an RGB colour in [0, 1], scaled to about [-1, 1]: ``(L/100, a/128, b/128)``."""
    pixel = np.asarray(rgb, np.float32).reshape(1, 1, 3)
    l_, a, b = cv2.cvtColor(pixel, cv2.COLOR_RGB2Lab)[0, 0]  # float input: L 0..100
    return np.asarray([l_ / 100.0, a / 128.0, b / 128.0], np.float32)


def colour_table(vocab: Mapping[str, int], size: int) -> np.ndarray:
    """(size, 4) float32 per token id: scaled CIELAB and a 1 flag for colour words, else 0.

    Args:
        vocab: WordPiece token -> id (continuation pieces ``##...`` never match).
        size: Number of ids.
    """
    names = colour_names()
    table = np.zeros((size, 4), np.float32)
    for token, index in vocab.items():
        if token.startswith("##") or not token.isalpha():
            continue
        name = token if token in names else None
        for suffix in _SUFFIXES:
            if name is None and token.endswith(suffix) and token[: -len(suffix)] in names:
                name = token[: -len(suffix)]
        if name is not None and token not in NOT_COLOURS:
            table[index, :3] = lab(names[name])
            table[index, 3] = 1.0
    return table
