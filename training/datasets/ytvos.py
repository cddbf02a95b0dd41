"""Ref-YouTube-VOS: YouTube-VOS videos with referring expressions (``meta_expressions.json``).

Assumed layout (the one the public release unpacks to)::

    <root>/meta_expressions/<split>/meta_expressions.json
    <root>/<split>/JPEGImages/<vid>/<frame>.jpg
    <root>/<split>/Annotations/<vid>/<frame>.png     indexed PNG, palette index = object id

One sample = (expression, video, listed frame, object) for every frame in the video's
``"frames"`` list, including frames where the object is absent (empty mask). The JPEGs of the
release are already subsampled (every 5th frame), so ``frame_index`` is the position in the
``"frames"`` list and ``prev_frame`` is the previous listed frame (e.g. ``00005`` before
``00010``), not the previous frame of the original 30 fps video.

Only splits with masks can be loaded: the public ``valid`` / ``test`` splits ship no
``Annotations`` and no ``obj_id``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from training.datasets.common import (
    DatasetFormatError,
    RealDataset,
    check_layout,
    normalize_expression,
)
from training.sample import Sample

__all__ = ["YTVOS_LAYOUT", "RefYouTubeVOS", "YTVOSEntry"]

logger = logging.getLogger(__name__)

YTVOS_LAYOUT = """\
<root>/
  meta_expressions/<split>/meta_expressions.json
      {"videos": {<vid>: {"expressions": {"0": {"exp": str, "obj_id": "1"}, ...},
                          "frames": ["00000", "00005", ...]}}}
  <split>/
    JPEGImages/<vid>/<frame>.jpg
    Annotations/<vid>/<frame>.png          indexed PNG: 0 bg, palette index = obj_id
"""


@dataclass(frozen=True, slots=True)
class YTVOSEntry:
    """One Ref-YouTube-VOS sample, without pixels.

    Attributes:
        video_id: YouTube-VOS video id.
        frame_index: Position of the frame in the video's ``"frames"`` list.
        object_id: ``obj_id`` of the expression (a palette index).
        expression: Normalised expression.
        frame_name: File stem, e.g. ``"00010"``.
        prev_name: Previous listed frame's stem, or ``None`` for the first.
    """

    video_id: str
    frame_index: int
    object_id: str
    expression: str
    frame_name: str
    prev_name: str | None


class RefYouTubeVOS(RealDataset):
    """A Ref-YouTube-VOS split that has masks (``train`` in the public release).

    Args:
        root: Folder holding ``meta_expressions/`` and ``<split>/`` (see :data:`YTVOS_LAYOUT`).
        split: ``"train"``, ``"valid"`` or ``"test"``; the split must have ``Annotations/``.

    Raises:
        DatasetLayoutError: A required file or folder is missing.
        DatasetFormatError: ``meta_expressions.json`` is not in the published format.
    """

    name = "ytvos"
    splits = ("train", "valid", "test")
    default_split = "train"
    layout = YTVOS_LAYOUT

    def __init__(self, *, root: Path | str, split: str = "train") -> None:
        super().__init__(root=root, split=split)
        meta_rel = f"meta_expressions/{split}/meta_expressions.json"
        self.root = check_layout(
            root,
            dataset=self.name,
            required=(meta_rel, f"{split}/JPEGImages"),
            layout=self.layout,
        )
        if not (self.root / split / "Annotations").is_dir():
            hint = "" if split == "train" else "The public release has masks for 'train' only."
            raise self._missing(self.root / split / "Annotations", hint=hint)
        meta_path = self.root / meta_rel
        try:
            videos = json.loads(meta_path.read_text(encoding="utf-8"))["videos"]
            if not isinstance(videos, dict):
                raise TypeError("'videos' is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetFormatError(
                f"{meta_path}: expected {{'videos': {{vid: {{'expressions': ..., 'frames': "
                f"[...]}}}}}}: {exc}"
            ) from exc

        for video_id in sorted(videos):
            self._require(self.root / split / "JPEGImages" / video_id)
            self._require(self.root / split / "Annotations" / video_id)
            try:
                frames = [str(f) for f in videos[video_id]["frames"]]
                expressions = videos[video_id]["expressions"]
                items = sorted(expressions.items(), key=lambda kv: int(kv[0]))
                parsed = [(normalize_expression(e["exp"]), str(e["obj_id"])) for _, e in items]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise DatasetFormatError(
                    f"{meta_path}: video {video_id}: expected 'frames' [...] and 'expressions' "
                    f"{{'0': {{'exp': str, 'obj_id': str}}}}: {exc!r}"
                ) from exc
            for expression, object_id in parsed:
                if not expression:
                    logger.warning("ytvos: empty expression in video %s, skipped", video_id)
                    continue
                for index, name in enumerate(frames):
                    self._entries.append(
                        YTVOSEntry(
                            video_id=video_id,
                            frame_index=index,
                            object_id=object_id,
                            expression=expression,
                            frame_name=name,
                            prev_name=frames[index - 1] if index > 0 else None,
                        )
                    )
        logger.info("ytvos %s: %d samples from %d videos", split, len(self), len(videos))

    def _load(self, entry: YTVOSEntry) -> Sample:
        base = self.root / self.split
        return self._load_frame_and_png(
            entry,
            images=base / "JPEGImages" / entry.video_id,
            annotations=base / "Annotations" / entry.video_id,
        )
