"""J-HMDB-Sentences: one referring expression per J-HMDB video, evaluated on 3 frames per video.

J-HMDB is used for evaluation only (models trained on A2D-Sentences, no fine-tuning). Following
the common protocol, ``frames_per_video`` frames of each video are drawn with a fixed seed. The
choice depends only on ``(seed, video id, number of frames)``, not on file order, and is written
to / read from a JSON frame list so that runs are comparable.

Each video shows one actor, so every sample has ``object_id`` ``"0"``. The puppet mask
``part_mask`` (H, W, T) is non-zero on the actor; frame ``t`` of the mask goes with image
``Rename_Images/<action>/<video>/<t + 1:05d>.png``. Only frames covered by both the images and
the mask (``t < min(#png, T)``) are candidates.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from training.datasets.common import (
    DatasetFormatError,
    RealDataset,
    check_layout,
    normalize_expression,
    read_image,
)
from training.sample import Sample

__all__ = [
    "JHMDB_LAYOUT",
    "JHMDBEntry",
    "JHMDBSentences",
    "choose_frames",
    "load_part_mask",
    "part_mask_frames",
]

logger = logging.getLogger(__name__)

JHMDB_LAYOUT = """\
<root>/
  Rename_Images/<action>/<video>/<frame:05d>.png    1-based frame numbers
  puppet_mask/<action>/<video>/puppet_mask.mat      key "part_mask", (H, W, T); MATLAB v5 or v7.3
  jhmdb_annotation.txt                              CSV, header video_id,query
"""

_REQUIRED = ("Rename_Images", "puppet_mask", "jhmdb_annotation.txt")
_PNG_NAME = re.compile(r"^(\d+)\.png$")
_KEY = "part_mask"
FRAME_LIST_VERSION = 1


@dataclass(frozen=True, slots=True)
class JHMDBEntry:
    """One J-HMDB-Sentences sample, without pixels.

    Attributes:
        video_id: J-HMDB video name.
        frame_index: 0-based frame (image ``<frame_index + 1:05d>.png``, mask plane
            ``frame_index``).
        object_id: Always ``"0"`` (one actor per video).
        expression: Normalised query.
        action: J-HMDB action class (the image folder's parent).
    """

    video_id: str
    frame_index: int
    object_id: str
    expression: str
    action: str


def part_mask_frames(path: Path) -> int:
    """Number of frames T of ``part_mask`` in a puppet mask file, without loading it."""
    try:
        for name, shape, _ in scipy.io.whosmat(path):
            if name == _KEY:
                return int(shape[2]) if len(shape) == 3 else 1
        raise DatasetFormatError(f"{path}: no variable {_KEY!r}")
    except NotImplementedError:  # MATLAB v7.3 = HDF5; h5py sees the axes reversed
        with h5py.File(path, "r") as f:
            if _KEY not in f:
                raise DatasetFormatError(f"{path}: no dataset {_KEY!r} (has {sorted(f)})") from None
            shape = f[_KEY].shape  # (T, W, H)
            return int(shape[0]) if len(shape) == 3 else 1


def load_part_mask(path: Path) -> np.ndarray:
    """Load ``part_mask`` from a MATLAB v5 (scipy) or v7.3 (HDF5, via h5py) file.

    Returns:
        (H, W, T) uint8 in {0, 1}.

    Raises:
        DatasetFormatError: The key is missing or the array is not 2-D/3-D.
    """
    try:
        data = scipy.io.loadmat(path, variable_names=[_KEY])
        if _KEY not in data:
            raise DatasetFormatError(f"{path}: no variable {_KEY!r}")
        array = np.asarray(data[_KEY])  # (H, W, T)
    except NotImplementedError:  # MATLAB v7.3
        with h5py.File(path, "r") as f:
            if _KEY not in f:
                raise DatasetFormatError(f"{path}: no dataset {_KEY!r} (has {sorted(f)})") from None
            array = np.asarray(f[_KEY]).T  # (T, W, H) -> (H, W, T)
    if array.ndim == 2:  # MATLAB drops a trailing singleton T
        array = array[:, :, None]  # (H, W, 1)
    if array.ndim != 3:
        raise DatasetFormatError(f"{path}: {_KEY} must be (H, W, T), got shape {array.shape}")
    return (array > 0).astype(np.uint8)


def choose_frames(video_id: str, num_frames: int, *, seed: int, count: int) -> list[int]:
    """Deterministic choice of ``count`` distinct 0-based frames of one video.

    Args:
        video_id: Seeds the choice together with ``seed`` (order-independent).
        num_frames: Frames available (0 .. num_frames - 1).
        seed: Protocol seed.
        count: Frames wanted; all frames are taken if the video has fewer.

    Returns:
        Sorted frame indices.
    """
    if num_frames <= count:
        return list(range(num_frames))
    rng = np.random.default_rng([seed, zlib.crc32(video_id.encode("utf-8"))])
    return sorted(int(i) for i in rng.choice(num_frames, size=count, replace=False))


class JHMDBSentences(RealDataset):
    """J-HMDB-Sentences (test only).

    Args:
        root: Folder holding ``Rename_Images/``, ``puppet_mask/`` and
            ``jhmdb_annotation.txt`` (see :data:`JHMDB_LAYOUT`).
        split: Only ``"test"``.
        frames_per_video: Frames evaluated per video (the protocol uses 3).
        seed: Seed of the frame choice.
        frame_list: JSON file of the chosen frames. If it exists, its choice is used (and
            ``seed``/``frames_per_video`` are ignored) so runs are comparable; otherwise the
            frames are chosen with ``seed`` and written there. ``None``: choose, don't write.

    Raises:
        DatasetLayoutError: A required file or folder is missing.
        DatasetFormatError: A file is not in the published format, or ``frame_list`` does not
            match the dataset.
    """

    name = "jhmdb"
    splits = ("test",)
    default_split = "test"
    layout = JHMDB_LAYOUT

    def __init__(
        self,
        *,
        root: Path | str,
        split: str = "test",
        frames_per_video: int = 3,
        seed: int = 0,
        frame_list: Path | str | None = None,
    ) -> None:
        super().__init__(root=root, split=split)
        if frames_per_video < 1:
            raise ValueError(f"frames_per_video must be >= 1, got {frames_per_video}")
        self.root = check_layout(root, dataset=self.name, required=_REQUIRED, layout=self.layout)
        self._masks: OrderedDict[Path, np.ndarray] = OrderedDict()
        actions = self._find_actions()
        queries = self._read_queries()

        available: dict[str, int] = {}
        for video_id, _ in queries:
            if video_id in available:
                continue
            if video_id not in actions:
                raise self._missing(self.root / "Rename_Images" / "<action>" / video_id)
            action = actions[video_id]
            mask_path = self._require(self._mask_path(action, video_id))
            frames = self._png_numbers(self.root / "Rename_Images" / action / video_id)
            num_frames = min(len(frames), part_mask_frames(mask_path))
            if frames[:num_frames] != list(range(1, num_frames + 1)):
                raise DatasetFormatError(
                    f"{self.root / 'Rename_Images' / action / video_id}: frames must be "
                    f"00001.png .. {num_frames:05d}.png without gaps"
                )
            available[video_id] = num_frames

        self.frame_list = Path(frame_list) if frame_list is not None else None
        if self.frame_list is not None and self.frame_list.exists():
            self.chosen = self._read_frame_list(self.frame_list, available)
            logger.info("jhmdb: frames read from %s", self.frame_list)
        else:
            self.seed, self.frames_per_video = seed, frames_per_video
            self.chosen = {
                video_id: choose_frames(video_id, n, seed=seed, count=frames_per_video)
                for video_id, n in sorted(available.items())
            }
            if self.frame_list is not None:
                self.write_frame_list(self.frame_list)
                logger.info("jhmdb: chosen frames written to %s", self.frame_list)

        for video_id, query in sorted(queries, key=lambda q: q[0]):
            for frame_index in self.chosen[video_id]:
                self._entries.append(
                    JHMDBEntry(
                        video_id=video_id,
                        frame_index=frame_index,
                        object_id="0",
                        expression=query,
                        action=actions[video_id],
                    )
                )

    def _mask_path(self, action: str, video_id: str) -> Path:
        return self.root / "puppet_mask" / action / video_id / "puppet_mask.mat"

    def _image_path(self, entry: JHMDBEntry, frame_index: int) -> Path:
        return (
            self.root
            / "Rename_Images"
            / entry.action
            / entry.video_id
            / f"{frame_index + 1:05d}.png"
        )

    @staticmethod
    def _png_numbers(folder: Path) -> list[int]:
        return sorted(
            int(m.group(1)) for p in folder.iterdir() if (m := _PNG_NAME.match(p.name)) is not None
        )

    def _find_actions(self) -> dict[str, str]:
        """Video name -> action, from the ``Rename_Images/<action>/<video>`` folders."""
        actions: dict[str, str] = {}
        for action_dir in sorted((self.root / "Rename_Images").iterdir()):
            if not action_dir.is_dir():
                continue
            for video_dir in sorted(action_dir.iterdir()):
                if not video_dir.is_dir():
                    continue
                if video_dir.name in actions:
                    raise DatasetFormatError(
                        f"video {video_dir.name} appears under both actions "
                        f"{actions[video_dir.name]} and {action_dir.name}"
                    )
                actions[video_dir.name] = action_dir.name
        return actions

    def _read_queries(self) -> list[tuple[str, str]]:
        """(video id, normalised query) rows of ``jhmdb_annotation.txt``."""
        path = self.root / "jhmdb_annotation.txt"
        rows = csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")))
        header = [c.strip().lower() for c in next(rows, [])]
        if header != ["video_id", "query"]:
            raise DatasetFormatError(f"{path}: expected header video_id,query, got {header}")
        out = []
        for line_no, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise DatasetFormatError(f"{path}:{line_no}: expected 2 columns, got {row}")
            query = normalize_expression(",".join(row[1:]))
            if not query:
                logger.warning("jhmdb: dropped %s:%d, empty query", path, line_no)
                continue
            out.append((row[0].strip(), query))
        return out

    def _read_frame_list(self, path: Path, available: dict[str, int]) -> dict[str, list[int]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            frames = {str(k): [int(i) for i in v] for k, v in data["frames"].items()}
            self.seed = data.get("seed")
            self.frames_per_video = data.get("frames_per_video")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DatasetFormatError(
                f"{path}: not a J-HMDB frame list (JSON with a 'frames' mapping video -> "
                f"0-based frame indices): {exc}"
            ) from exc
        missing = sorted(set(available) - set(frames))
        if missing:
            raise DatasetFormatError(
                f"{path}: no frames for {len(missing)} annotated videos (e.g. {missing[0]}); "
                "delete the file to choose frames again"
            )
        extra = sorted(set(frames) - set(available))
        if extra:
            logger.warning("jhmdb: %s lists %d unknown videos, ignored", path, len(extra))
        for video_id, n in available.items():
            bad = [i for i in frames[video_id] if not 0 <= i < n]
            if bad:
                raise DatasetFormatError(
                    f"{path}: video {video_id} has {n} frames, frame list asks for {bad}"
                )
        return {video_id: sorted(frames[video_id]) for video_id in available}

    def write_frame_list(self, path: Path | str) -> None:
        """Write the chosen frames as JSON (0-based indices; image = index + 1)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": FRAME_LIST_VERSION,
            "dataset": self.name,
            "seed": self.seed,
            "frames_per_video": self.frames_per_video,
            "index_base": 0,
            "frames": self.chosen,
        }
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    def _part_mask(self, path: Path) -> np.ndarray:
        if path not in self._masks:
            self._masks[path] = load_part_mask(self._require(path))
            while len(self._masks) > 2:
                self._masks.popitem(last=False)
        return self._masks[path]

    def _load(self, entry: JHMDBEntry) -> Sample:
        frame = read_image(self._require(self._image_path(entry, entry.frame_index)))
        prev = None
        if entry.frame_index > 0:
            prev = read_image(self._require(self._image_path(entry, entry.frame_index - 1)))
        masks = self._part_mask(self._mask_path(entry.action, entry.video_id))
        if masks.shape[:2] != frame.shape[:2]:
            raise DatasetFormatError(
                f"{self._mask_path(entry.action, entry.video_id)}: mask {masks.shape[:2]} does "
                f"not match frame {frame.shape[:2]}"
            )
        return Sample(
            frame=frame,
            prev_frame=prev,
            flow=None,
            expression=entry.expression,
            mask=np.ascontiguousarray(masks[:, :, entry.frame_index]),
            dataset=self.name,
            video_id=entry.video_id,
            frame_index=entry.frame_index,
            object_id=entry.object_id,
            split=self.split,
        )
