"""Shared machinery of the real-dataset loaders: errors, layout checks, text and pixel reading.

Every loader builds its sample index eagerly from the annotation files (cheap) and reads pixels
lazily in ``__getitem__``. Frames come back as (H, W, 3) uint8 BGR, masks as (H, W) uint8 with
1 = referred object, 0 = background, :data:`training.sample.VOID` (255) = ignored.
"""

from __future__ import annotations

import logging
import operator
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from PIL import Image

from training.sample import VOID, Sample

__all__ = [
    "DatasetFormatError",
    "DatasetLayoutError",
    "RealDataset",
    "VideoFrameReader",
    "check_layout",
    "decode_text",
    "normalize_expression",
    "object_mask",
    "read_image",
    "read_indexed_png",
]

logger = logging.getLogger(__name__)

# Captures opened by a parent process and inherited through fork; never destroyed in the child.
_INHERITED_CAPTURES: list[Any] = []


class DatasetLayoutError(ValueError):
    """A dataset root lacks a file or folder that the loader needs.

    The message names the missing path and prints the layout the loader expects.

    Attributes:
        dataset: Dataset name, e.g. ``"a2d"``.
        root: The root the user gave.
        missing: The path that does not exist.
    """

    def __init__(
        self, *, dataset: str, root: Path, missing: Path | str, layout: str, hint: str = ""
    ) -> None:
        self.dataset = dataset
        self.root = Path(root)
        self.missing = missing
        message = (
            f"{dataset}: missing {missing}\n"
            f"Expected layout under --root ({root}):\n{layout.rstrip()}"
        )
        if hint:
            message += f"\n{hint}"
        super().__init__(message)


class DatasetFormatError(ValueError):
    """A dataset file exists but its content is not in the published format."""


def normalize_expression(text: str) -> str:
    """Lower-case a referring expression and collapse its whitespace to single spaces."""
    return " ".join(text.lower().split())


def decode_text(raw: bytes, *, encodings: Sequence[str], path: Path | str = "") -> str:
    """Decode ``raw`` with the first of ``encodings`` that succeeds (a UTF-8 BOM is dropped).

    Raises:
        DatasetFormatError: None of the encodings decodes the bytes.
    """
    for encoding in encodings:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text.removeprefix("\ufeff")
    raise DatasetFormatError(f"{path}: cannot decode as any of {', '.join(encodings)}")


def _hint(root: Path, relpaths: Iterable[str]) -> str:
    """Suggest a neighbouring folder that has the expected layout (root one level off)."""
    relpaths = list(relpaths)

    def complete(candidate: Path) -> bool:
        return all((candidate / rel).exists() for rel in relpaths)

    candidates = [root.parent] if root.parent != root else []
    if root.is_dir():
        candidates += sorted(p for p in root.iterdir() if p.is_dir())
    for candidate in candidates:
        if candidate != root and complete(candidate):
            return f"Hint: {candidate} has this layout; pass it as --root."
    return ""


def check_layout(root: Path | str, *, dataset: str, required: Iterable[str], layout: str) -> Path:
    """Check that ``root`` holds every path in ``required`` (relative to root).

    Args:
        root: Dataset root given by the user.
        dataset: Dataset name for the message.
        required: Relative paths (files or folders) that must exist.
        layout: The expected layout tree, printed on error.

    Returns:
        ``root`` as an absolute :class:`Path`.

    Raises:
        DatasetLayoutError: ``root`` or one of the required paths does not exist; names the
            first missing one.
    """
    root = Path(root).expanduser().absolute()
    required = list(required)
    if not root.is_dir():
        raise DatasetLayoutError(
            dataset=dataset, root=root, missing=root, layout=layout, hint=_hint(root, required)
        )
    for rel in required:
        if not (root / rel).exists():
            raise DatasetLayoutError(
                dataset=dataset,
                root=root,
                missing=root / rel,
                layout=layout,
                hint=_hint(root, required),
            )
    return root


def read_image(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 BGR.

    Raises:
        DatasetFormatError: The file cannot be decoded as an image.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetFormatError(f"cannot decode image {path}")
    return image


def read_indexed_png(path: Path) -> np.ndarray:
    """Read the palette indices of an indexed (mode ``"P"``) PNG mask, not its RGB colours.

    Grey (mode ``"L"``) PNGs are accepted too: their values are taken as the labels.

    Returns:
        (H, W) uint8 labels: 0 background, 1..N objects, 255 void.

    Raises:
        DatasetFormatError: The file is not a palette or grey image.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise DatasetFormatError(
                    f"{path}: expected an indexed (mode 'P') PNG mask, got mode {image.mode!r}"
                )
            labels = np.array(image, dtype=np.uint8)
    except OSError as exc:
        raise DatasetFormatError(f"cannot decode mask {path}: {exc}") from exc
    return labels


def object_mask(labels: np.ndarray, object_id: int) -> np.ndarray:
    """Binary mask of one object from a label map, keeping void.

    Args:
        labels: (H, W) integer labels, 255 = void.
        object_id: Label of the referred object (1..254).

    Returns:
        (H, W) uint8: 1 where ``labels == object_id``, 255 where void, 0 elsewhere.
    """
    mask = (labels == object_id).astype(np.uint8)
    mask[labels == VOID] = VOID
    return mask


class VideoFrameReader:
    """Random access to frames of video files through ``cv2.VideoCapture``, decoding forward.

    Seeking with ``CAP_PROP_POS_FRAMES`` is not frame-accurate for every codec, so the reader
    keeps the last video open and decodes forward to the requested frame, reopening the file
    only to go backwards or to switch videos. The last ``cache_size`` decoded frames are kept,
    so reading frame ``t - 1`` then ``t`` (a sample and its previous frame) decodes each once.

    Not thread-safe: use one reader per thread. Safe across processes: pickling drops the open
    capture, and a forked child (e.g. a ``DataLoader`` worker) opens its own instead of sharing
    the parent's file position.

    Args:
        cache_size: Number of decoded frames kept (>= 2).
    """

    def __init__(self, *, cache_size: int = 8) -> None:
        if cache_size < 2:
            raise ValueError(f"cache_size must be >= 2, got {cache_size}")
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._capture: Any = None
        self._path: str | None = None
        self._next = 0  # index of the frame the open capture decodes next
        self._pid = os.getpid()  # process that opened the capture

    def __getstate__(self) -> dict[str, Any]:
        return {"cache_size": self.cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(cache_size=state["cache_size"])

    def close(self) -> None:
        """Release the open capture (the frame cache is kept)."""
        if self._capture is not None:
            if self._pid == os.getpid():
                self._capture.release()
            else:  # inherited through fork: its decoder threads do not exist here, so its
                _INHERITED_CAPTURES.append(self._capture)  # destructor would hang; keep it
        self._capture, self._path, self._next = None, None, 0

    def _open(self, path: str) -> None:
        self.close()
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise DatasetFormatError(f"cannot open video {path}")
        self._capture, self._path, self._next, self._pid = capture, path, 0, os.getpid()

    def read(self, path: Path | str, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) of the video at ``path``.

        Returns:
            (H, W, 3) uint8 BGR, a fresh copy the caller may modify.

        Raises:
            DatasetFormatError: The video cannot be opened or has no frame ``index``.
        """
        path = str(path)
        index = operator.index(index)
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        key = (path, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key].copy()
        if self._path != path or index < self._next or self._pid != os.getpid():
            self._open(path)
        while self._next < index:
            if not self._capture.grab():
                raise DatasetFormatError(f"{path}: no frame {index} (video has {self._next})")
            self._next += 1
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise DatasetFormatError(f"{path}: no frame {index} (video has {self._next})")
        self._next += 1
        self._cache[key] = frame
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return frame.copy()


class RealDataset:
    """Base of the real-dataset loaders: an indexable sequence of :class:`Sample`.

    Subclasses set the class attributes, fill ``self._entries`` in their constructor (each
    entry has at least ``video_id``, ``frame_index``, ``object_id`` and ``expression``) and
    implement :meth:`_load`.

    Attributes:
        name: Dataset name written into every sample (``Sample.dataset``).
        splits: Valid split names.
        default_split: Split used when none is given.
        layout: Expected layout tree under the root (printed in errors).
        root: Absolute dataset root.
        split: The chosen split.
    """

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ()
    default_split: ClassVar[str] = ""
    layout: ClassVar[str] = ""

    def __init__(self, *, root: Path | str, split: str) -> None:
        if split not in self.splits:
            raise ValueError(
                f"{self.name}: unknown split {split!r}; valid: {', '.join(self.splits)}"
            )
        self.root = Path(root).expanduser().absolute()
        self.split = split
        self._entries: list[Any] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Sample:
        index = operator.index(index)
        n = len(self._entries)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} samples")
        return self._load(self._entries[index % n])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"samples={len(self)}, videos={len(self.video_ids())})"
        )

    @property
    def entries(self) -> tuple[Any, ...]:
        """Index entries (metadata only, no pixels), in sample order."""
        return tuple(self._entries)

    def video_ids(self) -> list[str]:
        """Sorted ids of the videos that have at least one sample."""
        return sorted({entry.video_id for entry in self._entries})

    def expressions(self) -> list[str]:
        """Sorted distinct normalised expressions (e.g. a tokenizer corpus)."""
        return sorted({entry.expression for entry in self._entries})

    def _missing(self, path: Path | str, hint: str = "") -> DatasetLayoutError:
        return DatasetLayoutError(
            dataset=self.name, root=self.root, missing=path, layout=self.layout, hint=hint
        )

    def _require(self, path: Path) -> Path:
        if not path.exists():
            raise self._missing(path)
        return path

    def _load(self, entry: Any) -> Sample:
        raise NotImplementedError

    def _load_frame_and_png(self, entry: Any, *, images: Path, annotations: Path) -> Sample:
        """The sample of a DAVIS-style entry: JPEG frames and one indexed PNG per frame.

        Args:
            entry: Index entry with ``frame_name``, ``prev_name`` (or ``None`` on a first frame),
                ``video_id``, ``frame_index``, ``object_id`` (the PNG label) and ``expression``.
            images: Folder of ``<frame_name>.jpg`` files.
            annotations: Folder of ``<frame_name>.png`` indexed masks.

        Returns:
            The sample: (H, W, 3) uint8 BGR frame and previous frame, (H, W) uint8 mask of the
            object (0/1, ``VOID`` where the annotation is void), no precomputed flow.

        Raises:
            DatasetLayoutError: a frame or annotation file is missing.
            DatasetFormatError: the mask and the frame differ in size.
        """
        frame = read_image(self._require(images / f"{entry.frame_name}.jpg"))
        prev = None
        if entry.prev_name is not None:
            prev = read_image(self._require(images / f"{entry.prev_name}.jpg"))
        png = annotations / f"{entry.frame_name}.png"
        labels = read_indexed_png(self._require(png))
        if labels.shape != frame.shape[:2]:
            raise DatasetFormatError(
                f"{png}: mask {labels.shape} does not match frame {frame.shape[:2]}"
            )
        return Sample(
            frame=frame,
            prev_frame=prev,
            flow=None,
            expression=entry.expression,
            mask=object_mask(labels, int(entry.object_id)),
            dataset=self.name,
            video_id=entry.video_id,
            frame_index=entry.frame_index,
            object_id=entry.object_id,
            split=self.split,
        )
