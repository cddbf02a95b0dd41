"""Pre- and post-processing shared by every backend, the pipeline and training (numpy + OpenCV).

One place decides how a camera frame and its optical flow become network inputs, and how the
network's logits become the mask a user sees (:func:`postprocess`), so the torch, ONNX Runtime
and TensorRT backends, the evaluator and training all agree.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

__all__ = [
    "MAX_SIDE",
    "MIN_SIDE",
    "SizeError",
    "check_input_size",
    "parse_size",
    "postprocess",
    "prepare_flow",
    "prepare_image",
    "sanitize_frame",
    "sigmoid",
]

#: Network input sides accepted by exports and engines (each a multiple of 32).
MIN_SIDE = 64
MAX_SIDE = 1024


def check_input_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate a network input size ``(H, W)``: multiples of 32 in ``[MIN_SIDE, MAX_SIDE]``."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"input size must be (height, width), got {size!r}") from exc
    for side in (h, w):
        if side % 32 or not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(
                f"input size {h}x{w} invalid: each side must be a multiple of 32 "
                f"in [{MIN_SIDE}, {MAX_SIDE}]"
            )
    return h, w


class SizeError(argparse.ArgumentTypeError, ValueError):
    """A size string or tuple is not a valid network input size (argparse shows the message)."""


def parse_size(text: str, *, network: bool = True) -> tuple[int, int]:
    """``"320x320"`` / ``"480x640"`` (``HxW``) -> ``(H, W)``: the project's one size parser.

    Usable as an argparse ``type=``: a bad value gives argparse's usage error with this message.

    Args:
        text: ``HxW`` with positive integers.
        network: Also check it is a valid network input size (:func:`check_input_size`); with
            ``False`` any positive sides pass (frame sizes; the caller checks its own range).

    Raises:
        SizeError: not ``HxW`` with positive integers, or (``network``) not a valid input size.
    """
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise SizeError(f"size must look like HxW (e.g. 320x320), got {text!r}")
    h, w = int(parts[0]), int(parts[1])
    if h <= 0 or w <= 0:
        raise SizeError(f"size sides must be positive, got {text!r}")
    if not network:
        return h, w
    try:
        return check_input_size((h, w))
    except ValueError as exc:
        raise SizeError(str(exc)) from None


def sanitize_frame(frame: np.ndarray) -> np.ndarray:
    """Convert a decoded frame of any common layout to contiguous ``(H, W, 3) uint8`` BGR.

    Accepts grey ``(H, W)`` / ``(H, W, 1)``, BGR ``(H, W, 3)``, BGRA ``(H, W, 4)``; dtypes
    uint8, uint16 (scaled by 1/257) and float in ``[0, 1]``.

    Raises:
        ValueError: not an array, empty, wrong rank/channels, or non-finite floats.
    """
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.size == 0 or frame.ndim not in (2, 3):
        raise ValueError(f"frame must be (H, W) or (H, W, C) and non-empty, got {frame.shape}")
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"frame must have 1, 3 or 4 channels, got {frame.shape[2]}")
    if frame.dtype == np.uint8:
        out = frame
    elif frame.dtype == np.uint16:
        out = (frame.astype(np.uint32) // 257).astype(np.uint8)
    elif np.issubdtype(frame.dtype, np.floating):
        if not np.isfinite(frame).all():
            raise ValueError("frame contains NaN or infinite values")
        out = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"unsupported frame dtype {frame.dtype}; use uint8, uint16 or float")
    if out.ndim == 2 or out.shape[2] == 1:
        out = cv2.cvtColor(out.reshape(out.shape[0], out.shape[1]), cv2.COLOR_GRAY2BGR)
    elif out.shape[2] == 4:
        out = cv2.cvtColor(out, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(out)


def prepare_image(
    frame_bgr: np.ndarray,
    size: tuple[int, int],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> np.ndarray:
    """Resize and normalise a BGR frame for the network.

    Args:
        frame_bgr: (H0, W0, 3) uint8 BGR (see :func:`sanitize_frame`).
        size: Network input ``(H, W)``.
        mean: RGB mean on the 0..1 scale (from the model config).
        std: RGB std on the 0..1 scale.

    Returns:
        (1, 3, H, W) float32 RGB, ``(x / 255 - mean) / std``.
    """
    h, w = size
    if frame_bgr.shape[:2] != (h, w):
        frame_bgr = cv2.resize(frame_bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    rgb = frame_bgr[:, :, ::-1].astype(np.float32) * (1.0 / 255.0)  # (H, W, 3)
    rgb = (rgb - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])  # (1, 3, H, W)


def prepare_flow(flow_px: np.ndarray, size: tuple[int, int], gain: float) -> np.ndarray:
    """Normalise a pixel flow field and resize it to the network input.

    The flow is divided by the width/height of the grid it was computed on (so it is in
    fractions of the image per frame, independent of the flow resolution) and multiplied by
    ``gain`` (from the model config).

    Args:
        flow_px: (h, w, 2) float32 (dx, dy) in pixels of an ``h x w`` grid.
        size: Network input ``(H, W)``.
        gain: ``config.flow_gain``.

    Returns:
        (1, 2, H, W) float32.
    """
    if flow_px.ndim != 3 or flow_px.shape[2] != 2:
        raise ValueError(f"flow must be (h, w, 2), got {flow_px.shape}")
    fh, fw = flow_px.shape[:2]
    norm = flow_px.astype(np.float32) * (np.asarray([gain / fw, gain / fh], np.float32))
    h, w = size
    if (fh, fw) != (h, w):
        norm = cv2.resize(norm, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(norm.transpose(2, 0, 1)[None])  # (1, 2, H, W)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    x = np.asarray(x, np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def postprocess(
    logits: np.ndarray,
    frame_hw: tuple[int, int],
    *,
    threshold: float = 0.5,
    previous: np.ndarray | None = None,
    smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network logits -> the probabilities and the mask a user sees (the one post-processing).

    The runtime, the evaluator and training validation all call this, so every score is a
    score of exactly the masks the stream draws: sigmoid at network size, optional temporal
    smoothing there, bilinear resize of the probabilities to the frame, threshold.

    Args:
        logits: (1, 1, H, W) or (H, W) float logits at network size.
        frame_hw: ``(H0, W0)`` of the original frame.
        threshold: Probability threshold in (0, 1).
        previous: The previous frame's network-size probabilities (``prob_net``), or ``None``.
        smoothing: EMA weight of ``previous`` in [0, 1): ``p = s * previous + (1 - s) * p``.

    Returns:
        ``(prob_net, prob, mask)``: (H, W) float32 probabilities at network size (the next
        frame's ``previous``), (H0, W0) float32 in [0, 1], and the (H0, W0) bool mask.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    lg = np.asarray(logits, np.float32)
    prob_net = sigmoid(lg.reshape(lg.shape[-2], lg.shape[-1]))  # (H, W)
    if smoothing > 0.0 and previous is not None and previous.shape == prob_net.shape:
        prob_net = (smoothing * previous + (1.0 - smoothing) * prob_net).astype(np.float32)
    h0, w0 = frame_hw
    prob = prob_net
    if prob.shape != (h0, w0):
        prob = cv2.resize(prob_net, (w0, h0), interpolation=cv2.INTER_LINEAR)
    prob = np.clip(prob, 0.0, 1.0).astype(np.float32, copy=False)
    return prob_net, prob, prob > threshold
