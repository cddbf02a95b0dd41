"""The demo clips: video files shipped with the project, each with the phrase it is shown with.

``run_stream.py --source demo`` and the app's examples play the same files. They live in
``engine/data/demo/`` with a ``clips.json`` index (name, file, phrase, label, where the clip
comes from and its licence); ``python -m training.make_demo`` wrote them. The default clip is
the first one. A demo source is an ordinary :class:`~engine.sources.FileSource` (looped), paced
like a camera by :class:`~engine.sources.PacedSource` when asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.sources import FileSource, PacedSource, Source, SourceNotFoundError

__all__ = ["DEMO_DIR", "DEMO_INDEX", "DemoClip", "demo_clip", "demo_clips", "open_demo"]

#: Where the shipped demo clips live.
DEMO_DIR = Path(__file__).parent / "data" / "demo"
#: The index of the demo clips.
DEMO_INDEX = DEMO_DIR / "clips.json"
_FORMAT = "hinet-stream-demo-clips"


@dataclass(frozen=True)
class DemoClip:
    """One shipped demo clip.

    Attributes:
        name: Short name (``--source demo:<name>``).
        path: The video file.
        phrase: The phrase the clip is shown with.
        label: One line for people (the app's example label).
        origin: Where the frames come from.
        licence: The clip's licence.
    """

    name: str
    path: Path
    phrase: str
    label: str
    origin: str
    licence: str


def demo_clips(index: Path = DEMO_INDEX) -> list[DemoClip]:
    """The shipped clips, the default first.

    Raises:
        SourceNotFoundError: the index or a clip file is missing or the index is malformed.
    """
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceNotFoundError(f"cannot read the demo clip index {index}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise SourceNotFoundError(f"{index} is not a {_FORMAT} file")
    clips = []
    for row in data.get("clips", []):
        clip = DemoClip(
            name=row["name"],
            path=index.parent / row["file"],
            phrase=row["phrase"],
            label=row["label"],
            origin=row["origin"],
            licence=row["licence"],
        )
        if not clip.path.is_file():
            raise SourceNotFoundError(f"demo clip {clip.name!r}: {clip.path} is missing")
        clips.append(clip)
    if not clips:
        raise SourceNotFoundError(f"{index} lists no clips")
    return clips


def demo_clip(name: str | None = None) -> DemoClip:
    """The clip called ``name`` (the default clip for ``None``).

    Raises:
        SourceNotFoundError: no such clip (the message lists the names).
    """
    clips = demo_clips()
    if name is None:
        return clips[0]
    for clip in clips:
        if clip.name == name:
            return clip
    names = ", ".join(c.name for c in clips)
    raise SourceNotFoundError(f"no demo clip {name!r}; shipped: {names}")


def open_demo(name: str | None = None, *, pace: float | None = None) -> Source:
    """A demo clip as a looping source, paced at ``pace`` fps like a camera (never dropping).

    Args:
        name: The clip (default: the first).
        pace: Frames per second, or ``None`` to serve frames as fast as they are read.
    """
    clip = demo_clip(name)
    source: Source = FileSource(clip.path, loop=True, phrase=clip.phrase)
    source.name = f"demo:{clip.name}"
    return source if pace is None else PacedSource(source, pace)
