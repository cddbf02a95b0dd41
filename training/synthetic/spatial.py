"""Spatial expressions: "the circle on the left", "the topmost star", "the box at the bottom".

People name objects by where they are all the time. The generator's expressions use shape,
size, colour and motion only; this module words a referent by its **position among the objects
of its shape** in one frame, where that position is unambiguous:

* a referent *qualifies* for ``left`` in frame ``t`` when at least two objects of its shape are
  visible and its centre is left of every other one's by at least :data:`MARGIN` of the frame
  width (``right``, ``top``, ``bottom`` alike, with the height for the last two);
* training words qualifying samples this way with probability ``AugmentConfig.spatial``
  (:func:`spatial_expression` over the training shape forms);
* the held-out **spatial split** of the test set (:class:`SpatialTestDataset`) is every
  qualifying (referent, frame) of the fixed test clips, which training never sees, each worded
  once with a fixed seed.

Horizontal flips swap ``left`` and ``right`` in the phrase (``training.torch_data``), so the
words stay true on flipped samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.sample import Sample
from training.synthetic.generator import Clip, SceneObject

__all__ = [
    "MARGIN",
    "POSITIONS",
    "SPATIAL_FORMS",
    "SpatialTestDataset",
    "positions",
    "spatial_expression",
]

#: Positions a referent can be named by.
POSITIONS = ("left", "right", "top", "bottom")
#: How far (fraction of the frame's width or height) the referent's centre must lie beyond every
#: other same-shape object's for the position to be unambiguous.
MARGIN = 0.12
#: Position -> surface forms; ``"... {}"`` after the noun, ``"{} ..."`` before it.
SPATIAL_FORMS: dict[str, tuple[str, ...]] = {
    "left": ("{} on the left", "leftmost {}", "{} on the left side", "{} furthest to the left"),
    "right": (
        "{} on the right",
        "rightmost {}",
        "{} on the right side",
        "{} furthest to the right",
    ),
    "top": ("{} at the top", "topmost {}", "uppermost {}", "{} highest up"),
    "bottom": ("{} at the bottom", "bottom {}", "lowest {}", "{} nearest the bottom"),
}


def positions(clip: Clip, referent: SceneObject, t: int) -> tuple[str, ...]:
    """The positions (of :data:`POSITIONS`) that single ``referent`` out in frame ``t``.

    Empty when fewer than two objects of its shape are visible, or the referent is not.
    """
    same = [o for o in clip.objects if o.shape == referent.shape and o.masks[t].any()]
    if len(same) < 2 or all(o.object_id != referent.object_id for o in same):
        return ()
    h, w = clip.frames[t].shape[:2]
    x, y = referent.centers[t]
    others = np.asarray([o.centers[t] for o in same if o.object_id != referent.object_id])
    out = []
    if x + MARGIN * w <= others[:, 0].min():
        out.append("left")
    if x - MARGIN * w >= others[:, 0].max():
        out.append("right")
    if y + MARGIN * h <= others[:, 1].min():
        out.append("top")
    if y - MARGIN * h >= others[:, 1].max():
        out.append("bottom")
    return tuple(out)


def spatial_expression(
    shape: str, position: str, rng: np.random.Generator, *, noun: str | None = None
) -> str:
    """``"the <shape> <position>"`` in training words (shape forms of the training lexicon).

    ``noun`` replaces the shape's forms (see :func:`training.synthetic.wording.real_noun`).
    """
    from training.synthetic.wording import training_forms

    if position not in SPATIAL_FORMS:
        raise ValueError(f"unknown position {position!r}; valid: {', '.join(POSITIONS)}")
    nouns = (noun,) if noun is not None else training_forms("shape", shape)
    noun = nouns[int(rng.integers(len(nouns)))]
    forms = SPATIAL_FORMS[position]
    return "the " + forms[int(rng.integers(len(forms)))].format(noun)


class SpatialTestDataset(Sequence):
    """The held-out spatial split: every qualifying (referent, frame) of some synthetic clips.

    Args:
        base: A grammar-worded :class:`~training.synthetic.dataset.SyntheticDataset` (the fixed
            test set of one split, usually); its clips are scanned once here.

    Items are :class:`~training.sample.Sample` with a spatial expression (fixed per referent
    and frame) and split ``"<split>/spatial"``.
    """

    def __init__(self, base) -> None:
        if base.wording != "grammar":
            raise ValueError("SpatialTestDataset needs a grammar-worded SyntheticDataset")
        self.base = base
        self._index: list[tuple[int, str]] = []  # (base index, position)
        for k in range(len(base)):
            seed, target, t = base.locate(k)
            clip, _ = base.clip(seed)
            obj = clip.targets[target]
            found = positions(clip, obj, t)
            if found:
                rng = np.random.default_rng([seed, obj.object_id, t, 0x5A7])
                self._index.append((k, found[int(rng.integers(len(found)))]))

    def __len__(self) -> int:
        return len(self._index)

    def locate(self, index: int) -> tuple[int, int, int]:
        """Item index -> ``(seed, target position in clip.targets, frame index)``."""
        return self.base.locate(self._index[index][0])

    def clip(self, seed: int):
        """The base dataset's (cached) clip of ``seed`` and its flow slots."""
        return self.base.clip(seed)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        k, position = self._index[index]
        sample = self.base[k]
        seed, target, t = self.base.locate(k)
        clip, _ = self.base.clip(seed)
        obj = clip.targets[target]
        rng = np.random.default_rng([seed, obj.object_id, t, 0x5A8])
        sample.expression = spatial_expression(obj.shape, position, rng)
        sample.split = f"{self.base.split}/spatial"
        sample.attributes = {"shape": obj.shape, "position": position}
        return sample
