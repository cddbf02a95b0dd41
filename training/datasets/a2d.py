"""A2D-Sentences: referring expressions over the A2D actor-action videos.

One sample = (query, video, annotated frame, instance) for every annotated frame in which the
queried instance appears. Frames are decoded from ``clips320H/<vid>.mp4``; masks come from the
per-frame HDF5 files of ``a2d_annotation_with_instances``.

Quirks of the published files, and what this loader does about them:

- ``a2d_annotation.txt`` has a row whose instance id is ``"1 (copy)"``: any row whose instance
  id is not an integer is dropped and logged.
- Videos listed in ``a2d_missed_videos.txt`` are excluded.
- One frame lists the same instance id twice in ``instance``: one sample is made and the mask
  of the **first** occurrence is used (logged as a warning).
- ``reMask`` is stored MATLAB-transposed, (N, W, H), or (W, H) when N == 1: the last two axes
  are transposed back to (H, W).
- .h5 names are 1-based frame numbers: ``00012.h5`` is ``frame_index`` 11 of the mp4.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from training.datasets.common import (
    DatasetFormatError,
    RealDataset,
    VideoFrameReader,
    check_layout,
    normalize_expression,
)
from training.sample import Sample

__all__ = ["A2D_LAYOUT", "A2DEntry", "A2DSentences"]

logger = logging.getLogger(__name__)

A2D_LAYOUT = """\
<root>/
  Release/
    videoset.csv                  no header; vid,label,start_time,end_time,height,width,
                                  total_frames,annotated_frames,subset (0 train, 1 test)
    clips320H/<vid>.mp4
  text_annotations/
    a2d_annotation.txt            CSV, header video_id,instance_id,query
    a2d_missed_videos.txt         one video id per line (excluded)
    a2d_annotation_with_instances/<vid>/<frame:05d>.h5
                                  1-based frame; datasets instance (N,), reMask (N,W,H) or
                                  (W,H), reBBox (4,N), id (1,N)
"""

_REQUIRED = (
    "Release/videoset.csv",
    "Release/clips320H",
    "text_annotations/a2d_annotation.txt",
    "text_annotations/a2d_missed_videos.txt",
    "text_annotations/a2d_annotation_with_instances",
)
_SUBSETS = {0: "train", 1: "test"}
_H5_NAME = re.compile(r"^(\d+)\.h5$")


@dataclass(frozen=True, slots=True)
class A2DEntry:
    """One A2D-Sentences sample, without pixels.

    Attributes:
        video_id: A2D video id.
        frame_index: 0-based frame in the mp4 (the .h5 frame number minus 1).
        object_id: Instance id as written in the annotation files.
        expression: Normalised query.
        h5_path: The frame's instance annotation file.
        position: Row of the instance in the .h5 arrays (first occurrence if duplicated).
    """

    video_id: str
    frame_index: int
    object_id: str
    expression: str
    h5_path: Path
    position: int


def _read_h5_instances(path: Path) -> list[int]:
    """Instance ids of one annotated frame, in file order."""
    try:
        with h5py.File(path, "r") as f:
            if "instance" not in f:
                raise DatasetFormatError(f"{path}: no 'instance' dataset (has {sorted(f)})")
            return [int(v) for v in np.asarray(f["instance"]).ravel()]
    except OSError as exc:
        raise DatasetFormatError(f"cannot read HDF5 file {path}: {exc}") from exc


def read_a2d_mask(path: Path, position: int) -> np.ndarray:
    """Mask of the instance at ``position`` in one ``a2d_annotation_with_instances`` file.

    Args:
        path: The .h5 file.
        position: Row of the instance in ``instance``.

    Returns:
        (H, W) uint8 in {0, 1}.

    Raises:
        DatasetFormatError: The file lacks ``reMask``/``instance`` or their sizes disagree.
    """
    try:
        with h5py.File(path, "r") as f:
            if "reMask" not in f or "instance" not in f:
                raise DatasetFormatError(
                    f"{path}: expected datasets 'instance' and 'reMask', has {sorted(f)}"
                )
            n = int(np.asarray(f["instance"]).size)
            masks = f["reMask"]
            if masks.ndim == 2:  # N == 1 is stored squeezed: (W, H)
                if n != 1:
                    raise DatasetFormatError(f"{path}: 2-D reMask but {n} instances")
                stored = np.asarray(masks)  # (W, H)
            elif masks.ndim == 3 and masks.shape[0] == n:
                stored = np.asarray(masks[position])  # (W, H)
            else:
                raise DatasetFormatError(
                    f"{path}: reMask shape {masks.shape} does not match {n} instances"
                )
    except OSError as exc:
        raise DatasetFormatError(f"cannot read HDF5 file {path}: {exc}") from exc
    return (stored.T > 0).astype(np.uint8)  # MATLAB (W, H) -> (H, W)


class A2DSentences(RealDataset):
    """A2D-Sentences train or test split.

    Args:
        root: Folder holding ``Release/`` and ``text_annotations/`` (see :data:`A2D_LAYOUT`).
        split: ``"train"`` (videoset subset 0) or ``"test"`` (subset 1).
        progress: Show a progress bar while the .h5 files are indexed.

    Raises:
        DatasetLayoutError: A required file or folder is missing.
        DatasetFormatError: A file is not in the published format.
    """

    name = "a2d"
    splits = ("train", "test")
    default_split = "train"
    layout = A2D_LAYOUT

    def __init__(self, *, root: Path | str, split: str = "train", progress: bool = True) -> None:
        super().__init__(root=root, split=split)
        self.root = check_layout(root, dataset=self.name, required=_REQUIRED, layout=self.layout)
        self._reader = VideoFrameReader()
        videos = self._read_videoset()
        missed = self._read_missed()
        self.dropped_rows = 0  # rows dropped for a non-integer instance id ("1 (copy)")
        queries = self._read_queries()

        wanted: dict[str, list[tuple[int, str]]] = {}
        unknown: set[str] = set()
        for video_id, instance_id, query in queries:
            if video_id in missed:
                continue
            if video_id not in videos:
                unknown.add(video_id)
                continue
            if videos[video_id] == split:
                wanted.setdefault(video_id, []).append((instance_id, query))
        if unknown:
            logger.warning(
                "a2d: %d annotated videos are not in videoset.csv, skipped (e.g. %s)",
                len(unknown),
                sorted(unknown)[0],
            )

        instances_root = self.root / "text_annotations" / "a2d_annotation_with_instances"
        for video_id in tqdm(sorted(wanted), desc=f"a2d {split} index", disable=not progress):
            frames = self._read_video_frames(instances_root / video_id)
            if not frames:
                logger.warning("a2d: no instance annotations for video %s, skipped", video_id)
                continue
            self._require(self.root / "Release" / "clips320H" / f"{video_id}.mp4")
            for frame_number, h5_path, instances in frames:
                for instance_id, query in wanted[video_id]:
                    if instance_id in instances:
                        self._entries.append(
                            A2DEntry(
                                video_id=video_id,
                                frame_index=frame_number - 1,
                                object_id=str(instance_id),
                                expression=query,
                                h5_path=h5_path,
                                position=instances.index(instance_id),
                            )
                        )
        logger.info("a2d %s: %d samples from %d videos", split, len(self), len(wanted))

    def _read_videoset(self) -> dict[str, str]:
        """Video id -> split, from ``videoset.csv``."""
        path = self.root / "Release" / "videoset.csv"
        videos: dict[str, str] = {}
        with path.open(newline="", encoding="utf-8") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 9:
                    raise DatasetFormatError(
                        f"{path}:{line_no}: expected 9 columns (vid,label,start_time,end_time,"
                        f"height,width,total_frames,annotated_frames,subset), got {len(row)}"
                    )
                try:
                    subset = _SUBSETS[int(row[8])]
                except (ValueError, KeyError) as exc:
                    raise DatasetFormatError(
                        f"{path}:{line_no}: subset must be 0 (train) or 1 (test), got {row[8]!r}"
                    ) from exc
                videos[row[0].strip()] = subset
        return videos

    def _read_missed(self) -> set[str]:
        path = self.root / "text_annotations" / "a2d_missed_videos.txt"
        return {line.strip() for line in path.read_text(encoding="utf-8").splitlines()} - {""}

    def _read_queries(self) -> list[tuple[str, int, str]]:
        """(video id, instance id, normalised query) rows of ``a2d_annotation.txt``."""
        path = self.root / "text_annotations" / "a2d_annotation.txt"
        text = path.read_text(encoding="utf-8-sig")
        rows = csv.reader(io.StringIO(text))
        header = [c.strip().lower() for c in next(rows, [])]
        if header != ["video_id", "instance_id", "query"]:
            raise DatasetFormatError(
                f"{path}: expected header video_id,instance_id,query, got {','.join(header)}"
            )
        out = []
        for line_no, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise DatasetFormatError(f"{path}:{line_no}: expected 3 columns, got {row}")
            video_id, instance, query = row[0].strip(), row[1].strip(), ",".join(row[2:])
            try:
                instance_id = int(instance)
            except ValueError:
                logger.warning(
                    "a2d: dropped %s:%d, instance id %r is not an integer", path, line_no, instance
                )
                self.dropped_rows += 1
                continue
            query = normalize_expression(query)
            if not query:
                logger.warning("a2d: dropped %s:%d, empty query", path, line_no)
                continue
            out.append((video_id, instance_id, query))
        return out

    @staticmethod
    def _read_video_frames(folder: Path) -> list[tuple[int, Path, list[int]]]:
        """(1-based frame number, .h5 path, instance ids) of a video's annotated frames."""
        if not folder.is_dir():
            return []
        frames = []
        for path in folder.iterdir():
            match = _H5_NAME.match(path.name)
            if match is None:
                continue
            instances = _read_h5_instances(path)
            if len(set(instances)) != len(instances):
                logger.warning(
                    "a2d: %s lists instance ids %s; using the first mask of each repeated id",
                    path,
                    instances,
                )
            frames.append((int(match.group(1)), path, instances))
        return sorted(frames)

    def _load(self, entry: A2DEntry) -> Sample:
        video = self.root / "Release" / "clips320H" / f"{entry.video_id}.mp4"
        prev = self._reader.read(video, entry.frame_index - 1) if entry.frame_index > 0 else None
        frame = self._reader.read(video, entry.frame_index)
        mask = read_a2d_mask(self._require(entry.h5_path), entry.position)
        if mask.shape != frame.shape[:2]:
            raise DatasetFormatError(
                f"{entry.h5_path}: mask {mask.shape} (after the MATLAB transpose) does not match "
                f"frame {frame.shape[:2]} of {video}"
            )
        return Sample(
            frame=frame,
            prev_frame=prev,
            flow=None,
            expression=entry.expression,
            mask=mask,
            dataset=self.name,
            video_id=entry.video_id,
            frame_index=entry.frame_index,
            object_id=entry.object_id,
            split=self.split,
        )
