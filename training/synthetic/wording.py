"""More ways to word a referent: training rewording, and the held-out paraphrase lexicon.

Both start from the canonical attributes an expression mentions
(``SceneObject.expression_attributes``: the shape, plus the size, colour and motion the grammar
chose to single the object out), so the meaning never changes; only the words do.

* :func:`reword` is **training augmentation**: the grammar's lexicon
  (:data:`training.synthetic.grammar.LEXICON`) plus :data:`TRAIN_EXTRA`, in the grammar's word
  order or a training-only relative clause ("the disc that is red"). It is applied to training
  samples only (``AugmentConfig.reword``); the fixed test set keeps the generator's wording.
* :func:`paraphrase` words a test referent from :data:`PARAPHRASE`, a second lexicon written
  separately (synonyms, other word order, relative clauses with "which"), that training never
  sees: no paraphrase form is a training form, and no paraphrase size or colour word appears
  in any training form (``tests/training/test_wording.py`` checks both). The paraphrase split
  of the test set is the same clips and referents worded this way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from training.synthetic.grammar import LEXICON

__all__ = [
    "EVERYDAY_NOUNS",
    "PARAPHRASE",
    "TRAIN_EXTRA",
    "paraphrase",
    "real_noun",
    "reword",
    "training_forms",
]

#: Everyday nouns people name things with (ImageNet has no person class); with the ImageNet
#: class names they stand in for a synthetic referent's shape in training, see :func:`real_noun`.
EVERYDAY_NOUNS = (
    "person", "man", "woman", "child", "boy", "girl", "people", "pedestrian", "cyclist",
    "rider", "driver", "player", "car", "van", "truck", "bus", "bike", "bicycle", "motorbike",
    "train", "boat", "plane", "dog", "cat", "horse", "bird", "cow", "sheep", "rabbit", "ball",
    "bag", "bottle", "cup", "chair", "table", "sign", "pole", "tree", "door", "window",
)  # fmt: skip

#: Training-only surface forms added to the grammar's (same attribute -> value -> forms).
TRAIN_EXTRA: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {
        "circle": ("round disc", "circle shape", "orb", "disk"),
        "square": ("square shape", "square block", "brick", "square slab"),
        "triangle": ("triangle shape", "arrowhead", "triangular block"),
        "star": ("star symbol", "sparkle"),
        "ring": ("ring shape", "band", "round band"),
        "cross": ("cross shape", "plus symbol"),
        "diamond": ("diamond shape", "kite", "gem shape"),
    },
    "size": {
        "small": ("smallish", "wee", "mini", "compact"),
        "big": ("large-sized", "giant", "enormous", "massive"),
    },
    "colour": {
        "red": ("bright red", "cherry", "ruby", "cherry-red"),
        "green": ("bright green", "jade", "mint-green", "grass-green"),
        "blue": ("bright blue", "cobalt", "sapphire", "sky-blue"),
        "yellow": ("bright yellow", "canary", "mustard", "canary-yellow"),
        "orange": ("bright orange", "copper", "carrot-orange", "pumpkin"),
        "purple": ("deep purple", "plum", "grape", "plum-coloured"),
        "cyan": ("bright cyan", "cyan-blue", "sea-blue", "glacier-blue"),
        "pink": ("bright pink", "blush", "bubblegum-pink", "flamingo-pink"),
        "white": ("pure white", "chalk-white", "milky", "pearl"),
        "black": ("pure black", "charcoal", "coal-black", "midnight-black"),
    },
    "motion": {
        "static": ("that does not move", "not moving at all", "unmoving", "stationary"),
        "left": ("moving to the left", "that goes left", "gliding left", "floating left"),
        "right": ("moving to the right", "that goes right", "gliding right", "floating right"),
        "up": ("moving upwards", "that goes up", "ascending", "floating up"),
        "down": ("moving downwards", "that goes down", "descending", "floating down"),
    },
}

#: The held-out paraphrase lexicon: never in training.
PARAPHRASE: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {
        "circle": ("ball", "round dot", "circular figure"),
        "square": ("tile", "quadrilateral", "squared tile"),
        "triangle": ("wedge", "three-sided figure", "triangular figure"),
        "star": ("five-pointed star", "starlike figure", "pointy star"),
        "ring": ("loop", "hollow circle", "doughnut shape"),
        "cross": ("plus", "plus-shaped figure", "crossed figure"),
        "diamond": ("lozenge", "tilted square", "diamond figure"),
    },
    "size": {"small": ("smaller", "miniature", "petite"), "big": ("bigger", "huge", "larger")},
    "colour": {
        "red": ("crimson", "scarlet"),
        "green": ("emerald", "lime"),
        "blue": ("azure", "navy"),
        "yellow": ("golden", "lemon"),
        "orange": ("tangerine", "amber"),
        "purple": ("lilac", "lavender"),
        "cyan": ("aqua", "teal"),
        "pink": ("rose", "salmon"),
        "white": ("ivory", "snowy"),
        "black": ("ebony", "jet"),
    },
    "motion": {
        "static": ("which does not move", "sitting still", "which remains in place"),
        "left": ("drifting leftwards", "sliding to the left", "travelling left"),
        "right": ("drifting rightwards", "sliding to the right", "travelling right"),
        "up": ("rising", "drifting upwards", "climbing"),
        "down": ("sinking", "drifting downwards", "falling"),
    },
}


def training_forms(attribute: str, value: str) -> tuple[str, ...]:
    """Every training surface form of ``attribute == value`` (grammar + :data:`TRAIN_EXTRA`)."""
    return LEXICON[attribute][value] + TRAIN_EXTRA.get(attribute, {}).get(value, ())


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _compose(
    attrs: Mapping[str, str],
    forms: dict[str, tuple[str, ...]],
    rng: np.random.Generator,
    *,
    relative: str | None,
) -> str:
    """Word a referent from per-attribute forms.

    ``the <size> <colour> <shape> <motion>``, or with the adjectives in a relative clause:
    ``the <shape> <relative> <size> and <colour> <motion>``.
    """
    adjectives = [_pick(forms[a], rng) for a in ("size", "colour") if a in attrs]
    noun = _pick(forms["shape"], rng)
    motion = [_pick(forms["motion"], rng)] if "motion" in attrs else []
    if relative and adjectives:
        return " ".join(["the", noun, relative, " and ".join(adjectives), *motion])
    return " ".join(["the", *adjectives, noun, *motion])


def _forms(lexicon_for: callable, attrs: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    return {a: lexicon_for(a, v) for a, v in attrs.items()}


def real_noun(rng: np.random.Generator) -> str:
    """A real-world noun: an ImageNet class name or one of :data:`EVERYDAY_NOUNS`.

    Training with the grounding prior words some synthetic referents with such a noun instead of
    their shape ("the red dog"), while the simulated prior marks the referent's category: the
    noun then says nothing the network's own words know, and it learns to take the category from
    the prior and the instance from the other words, as on real footage.
    """
    from models.grounding import class_names

    if rng.random() < 0.5:
        return EVERYDAY_NOUNS[int(rng.integers(len(EVERYDAY_NOUNS)))]
    names = class_names()
    return names[int(rng.integers(len(names)))].lower()


def reword(
    attributes: Mapping[str, str], rng: np.random.Generator, *, noun: str | None = None
) -> str:
    """A training wording of a referent (same meaning, training words only).

    Args:
        attributes: The canonical attributes the expression mentions (``shape`` included).
        rng: Chooses forms and word order.
        noun: Say this noun instead of the shape (see :func:`real_noun`).
    """
    forms = _forms(training_forms, attributes)
    if noun is not None:
        forms["shape"] = (noun,)
    relative = "that is" if rng.random() < 0.3 else None
    return _compose(attributes, forms, rng, relative=relative)


def paraphrase(attributes: Mapping[str, str], rng: np.random.Generator) -> str:
    """The held-out wording of a referent (:data:`PARAPHRASE`).

    Args:
        attributes: The canonical attributes the expression mentions (``shape`` included).
        rng: Chooses forms and word order (seed it per referent for a fixed test set).
    """
    forms = _forms(lambda a, v: PARAPHRASE[a][v], attributes)
    relative = "which is" if rng.random() < 0.5 else None
    return _compose(attributes, forms, rng, relative=relative)
