"""The on-disk synthetic dataset format (see docs/SYNTHETIC_FORMAT.md): writer and reader.

Layout::

    ROOT/index.json                         format, version, spec, list of clips
    ROOT/clips/<video_id>/frames/00000.png  (or .jpg) BGR frames
    ROOT/clips/<video_id>/masks/00000.png   indexed (palette) PNG: 0 background, k object k
    ROOT/clips/<video_id>/objects.json      per object: expression, attributes, motion, target
    ROOT/previews/<video_id>.gif            optional
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from engine.flow import OpticalFlow
from training.sample import Sample
from training.synthetic.dataset import ClipCache
from training.synthetic.generator import Clip

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IMAGE_FORMATS",
    "LAYOUT",
    "DiskClip",
    "SyntheticDiskDataset",
    "read_clip",
    "read_index_png",
    "write_clip",
    "write_index",
    "write_index_png",
]

FORMAT_NAME = "hinet-synthetic"
FORMAT_VERSION = 1
IMAGE_FORMATS = ("png", "jpg")
LAYOUT = (
    "expected layout: ROOT/index.json, ROOT/clips/<video_id>/frames/NNNNN.(png|jpg), "
    "ROOT/clips/<video_id>/masks/NNNNN.png (indexed), ROOT/clips/<video_id>/objects.json "
    "(see docs/SYNTHETIC_FORMAT.md)"
)

_ENTRY_KEYS = ("video_id", "split", "frames", "image_format", "targets")

# 0 black background, then distinct colours for object ids 1..5 (and beyond: grey).
_PALETTE = [0, 0, 0, 230, 25, 75, 60, 180, 75, 255, 225, 25, 0, 130, 200, 245, 130, 48]


def write_index_png(path: Path, labels: np.ndarray) -> None:
    """Write (H, W) uint8 object ids as an indexed (palette) PNG."""
    from PIL import Image

    labels = np.ascontiguousarray(labels, np.uint8)  # (H, W)
    img = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    img.putpalette(_PALETTE + [128] * (768 - len(_PALETTE)))
    img.save(path, optimize=False)


def read_index_png(path: Path) -> np.ndarray:
    """Read an indexed PNG back into (H, W) uint8 palette indices (object ids)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode != "P":
            raise ValueError(f"{path} is a {img.mode!r} PNG; masks must be indexed ('P'). {LAYOUT}")
        return np.array(img, np.uint8)


def _object_record(clip: Clip, obj) -> dict:
    return {
        "object_id": obj.object_id,
        "expression": obj.expression,
        "expression_attributes": obj.expression_attributes,
        "attributes": obj.attributes,
        "motion": {"label": obj.motion, "velocity_px_per_frame": list(obj.velocity)},
        "diameter_px": round(obj.diameter, 3),
        "bgr": list(obj.bgr),
        "depth": obj.depth,
        "target": obj.is_target,
    }


def write_clip(root: Path, clip: Clip, *, image_format: str = "png") -> dict:
    """Write one clip under ``root/clips/<video_id>/``.

    Args:
        root: Dataset root.
        clip: The clip.
        image_format: ``"png"`` (lossless) or ``"jpg"`` (quality 95).

    Returns:
        The clip's entry for ``index.json``.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(
            f"unknown image format {image_format!r}; valid: {', '.join(IMAGE_FORMATS)}"
        )
    cdir = Path(root) / "clips" / clip.video_id
    (cdir / "frames").mkdir(parents=True, exist_ok=True)
    (cdir / "masks").mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpg" else []
    for t, frame in enumerate(clip.frames):
        if not cv2.imwrite(str(cdir / "frames" / f"{t:05d}.{image_format}"), frame, params):
            raise OSError(f"could not write {cdir / 'frames'}")
        write_index_png(cdir / "masks" / f"{t:05d}.png", clip.label_map(t))
    objects = {
        "video_id": clip.video_id,
        "seed": clip.seed,
        "split": clip.split,
        "camera_offsets_px": clip.camera.tolist(),
        "objects": [_object_record(clip, o) for o in clip.objects],
    }
    (cdir / "objects.json").write_text(json.dumps(objects, indent=1))
    h, w = clip.spec.size
    return {
        "video_id": clip.video_id,
        "split": clip.split,
        "seed": clip.seed,
        "frames": len(clip.frames),
        "size": [h, w],
        "image_format": image_format,
        "targets": [o.object_id for o in clip.targets],
        "sha256": clip.digest(),
    }


def write_index(root: Path, entries: Sequence[dict], *, spec: dict) -> Path:
    """Write ``root/index.json`` listing the written clips."""
    path = Path(root) / "index.json"
    index = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "spec": spec,
        "clips": list(entries),
    }
    path.write_text(json.dumps(index, indent=1))
    return path


class DiskClip:
    """A clip read back from disk.

    Attributes:
        video_id: Clip id (folder name).
        split: ``"appearance"`` or ``"motion"``.
        frames: T frames (H, W, 3) uint8 BGR.
        labels: (T, H, W) uint8 object ids (0 background).
        objects: Records from ``objects.json`` (``object_id``, ``expression``, ...).
    """

    def __init__(
        self, *, video_id: str, split: str, frames: list, labels: np.ndarray, objects: list
    ):
        self.video_id, self.split, self.frames = video_id, split, frames
        self.labels, self.objects = labels, objects

    def mask(self, object_id: int, t: int) -> np.ndarray:
        """(H, W) uint8 1/0 visible mask of ``object_id`` at frame ``t``."""
        return (self.labels[t] == object_id).astype(np.uint8)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"missing {what}: {path}; {LAYOUT}")
    return path


def read_clip(root: Path, entry: dict) -> DiskClip:
    """Read one clip listed in ``index.json``."""
    cdir = _need(Path(root) / "clips" / entry["video_id"], "clip folder")
    meta = json.loads(_need(cdir / "objects.json", "object file").read_text())
    frames, labels = [], []
    for t in range(int(entry["frames"])):
        fpath = _need(cdir / "frames" / f"{t:05d}.{entry['image_format']}", "frame")
        frame = cv2.imread(str(fpath), cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError(f"cannot decode frame {fpath}")
        frames.append(frame)
        labels.append(read_index_png(_need(cdir / "masks" / f"{t:05d}.png", "mask")))
    return DiskClip(
        video_id=entry["video_id"],
        split=entry["split"],
        frames=frames,
        labels=np.stack(labels),  # (T, H, W)
        objects=meta["objects"],
    )


class SyntheticDiskDataset:
    """Samples from a dataset written by ``python -m training.make_synthetic``.

    Sample order matches :class:`training.synthetic.dataset.SyntheticDataset`: per clip, per
    referred object (``targets`` in the index), per frame.

    Args:
        root: Dataset root holding ``index.json``.
        split: Keep only clips of this split (``"appearance"``/``"motion"``), or ``None``.
        flow_preset: Optical-flow preset, or ``None`` for ``Sample.flow = None``.
        flow_size: ``(width, height)`` of the flow grid; default the frame size.
        cache_clips: How many decoded clips to keep.

    Raises:
        FileNotFoundError: ``root`` or ``index.json`` is missing (names the expected layout).
        ValueError: ``index.json`` is not this format.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        split: str | None = None,
        flow_preset: str | None = "ultrafast",
        flow_size: tuple[int, int] | None = None,
        cache_clips: int = 8,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} is not a directory; {LAYOUT}")
        index = json.loads(_need(self.root / "index.json", "index file").read_text())
        if index.get("format") != FORMAT_NAME or index.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{self.root / 'index.json'} is format {index.get('format')!r} v"
                f"{index.get('format_version')}; expected {FORMAT_NAME!r} v{FORMAT_VERSION}"
            )
        for i, c in enumerate(index.get("clips", [])):
            missing = [k for k in _ENTRY_KEYS if k not in c]
            if missing:
                raise ValueError(
                    f"{self.root / 'index.json'} clip #{i} lacks {missing}; each clip entry "
                    f"needs {list(_ENTRY_KEYS)}"
                )
        splits = {c["split"] for c in index.get("clips", [])}
        if split is not None and split not in splits:
            raise ValueError(f"split {split!r} not in {self.root}; valid: {sorted(splits)}")
        self.entries = [c for c in index.get("clips", []) if split is None or c["split"] == split]
        if not self.entries:
            raise ValueError(f"{self.root / 'index.json'} lists no clips")
        self.flow_preset = flow_preset
        self.flow_size = flow_size
        self._flow: OpticalFlow | None = None
        self._cache = ClipCache(capacity=cache_clips)
        self._samples = [
            (i, oid, t)
            for i, e in enumerate(self.entries)
            for oid in e["targets"]
            for t in range(int(e["frames"]))
        ]

    def __len__(self) -> int:
        return len(self._samples)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_flow"] = None
        state["_cache"] = ClipCache(capacity=self._cache.capacity)
        return state

    def clip(self, i: int) -> tuple[DiskClip, list]:
        """The (cached) decoded clip ``i`` of :attr:`entries` and its flow slots."""
        item = self._cache.get(i)
        if item is None:
            item = self._cache.put(i, read_clip(self.root, self.entries[i]))
        return item

    def __getitem__(self, index: int) -> Sample:
        i, oid, t = self._samples[index]
        clip, flows = self.clip(i)
        flow = None
        if self.flow_preset is not None:
            if flows[t] is None:
                if self._flow is None:
                    h, w = clip.frames[0].shape[:2]
                    size = self.flow_size or (w, h)
                    self._flow = OpticalFlow(preset=self.flow_preset, size=size)
                prev = clip.frames[t - 1] if t > 0 else None
                flows[t] = self._flow.between(prev, clip.frames[t])  # (h, w, 2)
            flow = flows[t]
        record = next(o for o in clip.objects if o["object_id"] == oid)
        return Sample(
            frame=clip.frames[t],
            prev_frame=clip.frames[t - 1] if t > 0 else None,
            flow=flow,
            expression=record["expression"],
            mask=clip.mask(oid, t),
            dataset="synthetic",
            video_id=clip.video_id,
            frame_index=t,
            object_id=str(oid),
            split=clip.split,
        )
