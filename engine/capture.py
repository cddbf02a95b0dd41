"""Open any source a user names: the demo clips, a webcam, a stream URL, a file or a folder.

The spec strings of ``run_stream.py --source`` and the page: ``"demo"`` / ``"demo:<clip>"``
(:mod:`engine.demo`), ``"0"`` (webcam index), ``"rtsp://..."`` / ``"http(s)://..."``
(:mod:`engine.live`), a video file path or an image folder path (:mod:`engine.sources`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine.demo import open_demo
from engine.live import open_camera, open_stream
from engine.sources import (
    FileSource,
    ImageFolderSource,
    PacedSource,
    Source,
    SourceNotFoundError,
    UnknownSourceError,
)

__all__ = ["SOURCE_FORMS", "open_source"]

#: Human-readable list of accepted source specs (used in error messages and --help).
SOURCE_FORMS = (
    "'demo' (the clip shipped with the project), a webcam index such as '0', "
    "an rtsp:// rtsps:// http:// https:// URL, a video file path, or a folder of images"
)

_URL = re.compile(r"^(rtsps?|https?|rtmp|udp|tcp)://", re.IGNORECASE)


def open_source(
    spec: str, *, loop: bool = False, pace: float | None = None, **kwargs: object
) -> Source:
    """Open a source from a spec string.

    Args:
        spec: ``"demo"`` (or ``"demo:<clip>"``), a webcam index (``"0"``), an
            ``rtsp://``/``http(s)://`` URL, a video file path or an image folder path (see
            :data:`SOURCE_FORMS`).
        loop: Loop finite sources (files, folders) forever; the demo always loops.
        pace: Play a file, folder or demo clip at this many frames per second like a camera,
            never dropping (:class:`PacedSource`); ``None`` serves frames as fast as they are
            read. Live sources ignore it.
        **kwargs: Passed to the stream/camera opener (e.g. ``backoff``).

    Raises:
        UnknownSourceError: the spec matches no accepted form (the message lists them).
        SourceNotFoundError: a file/folder does not exist.
        CameraUnavailableError: the webcam is absent or busy.
        StreamUnavailableError: the URL cannot be opened.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownSourceError(f"empty source spec; accepted: {SOURCE_FORMS}")
    spec = spec.strip()
    if pace is not None and not pace > 0:
        raise ValueError(f"pace must be positive frames per second or None, got {pace}")
    if spec.lower() == "demo" or spec.lower().startswith("demo:"):
        name = spec.split(":", 1)[1] if ":" in spec else None
        return open_demo(name, pace=pace)
    if spec.isdigit():
        return open_camera(int(spec), **kwargs)
    if _URL.match(spec):
        return open_stream(spec, **kwargs)
    if "://" in spec:
        raise UnknownSourceError(f"unsupported URL scheme in {spec!r}; accepted: {SOURCE_FORMS}")
    path = Path(spec).expanduser()
    finite: Source | None = None
    if path.is_dir():
        finite = ImageFolderSource(path, loop=loop)
    elif path.is_file():
        finite = FileSource(path, loop=loop)
    if finite is not None:
        return finite if pace is None else PacedSource(finite, pace)
    if path.suffix or os.sep in spec:
        raise SourceNotFoundError(f"no such file or folder: {spec}")
    raise UnknownSourceError(f"unknown source {spec!r}; accepted: {SOURCE_FORMS}")
