"""What the page does with frames: whole uploaded clips, and live webcam frames per session.

Both run the stream's own session code (:class:`engine.session.Segmenter`), overlay
(:func:`engine.overlay.draw_mask`) and latency statistics (:class:`engine.latency.LatencyStats`).

A processed clip gives three files:

* ``overlay.mp4``: every frame with the mask drawn, H.264 (browser-playable), same frame count,
  size and frame rate as the upload;
* ``masks.zip``: one 8-bit PNG per frame, ``mask_00000.png`` ... (0 background, 255 object), at
  the video's size — lossless, readable by any image library;
* a latency plot (per-stage milliseconds against the frame index).
"""

from __future__ import annotations

import logging
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.h264 import H264Writer
from app.plot import latency_plot
from app.validation import UploadError, VideoInfo
from engine.base import Engine
from engine.latency import LatencyStats, Stamps, json_safe
from engine.overlay import OverlayStyle, draw_hud_inplace, draw_mask, hud_lines, mask_to_png_bytes
from engine.session import Result, Segmenter
from engine.sources import EndOfStream, FileSource

__all__ = ["ClipResult", "LiveSession", "segment_clip"]

logger = logging.getLogger(__name__)

#: Per-frame stages of a processed clip, in order (milliseconds).
CLIP_STAGES = ("decode", "flow", "network", "postprocess", "overlay", "total")


@dataclass(frozen=True)
class ClipResult:
    """A processed clip.

    Attributes:
        video: H.264 mp4 with the overlay.
        masks: Zip of per-frame PNG masks.
        plot: (H, W, 3) uint8 RGB latency plot.
        frames: Frames processed (= frames in ``video`` and PNGs in ``masks``).
        phrase: The normalised phrase used.
        summary: JSON-able facts: backend, input size, fps, per-stage p50/p95 ms, mask areas.
    """

    video: Path
    masks: Path
    plot: np.ndarray
    frames: int
    phrase: str
    summary: dict[str, Any] = field(default_factory=dict)


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    p50, p95 = np.percentile(arr, [50, 95]) if arr.size else (float("nan"),) * 2
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


def segment_clip(
    info: VideoInfo,
    segmenter: Segmenter,
    *,
    out_dir: Path,
    max_frames: int,
    progress: Callable[[int, int], None] | None = None,
    style: OverlayStyle | None = None,
) -> ClipResult:
    """Segment every frame of a checked upload with a phrase already set on ``segmenter``.

    Args:
        info: From :func:`app.validation.check_video`.
        segmenter: A fresh session with its phrase set (its flow state starts empty).
        out_dir: Folder for ``overlay.mp4`` and ``masks.zip`` (created).
        max_frames: Decoding stops with :class:`UploadError` past this many frames.
        progress: Called as ``progress(done, total)`` after each frame (``total`` 0 if unknown).
        style: Overlay style.

    Returns:
        A :class:`ClipResult`.

    Raises:
        UploadError: more than ``max_frames`` frames, or no frame decoded.
        app.h264.FFmpegError: encoding failed.
    """
    if segmenter.phrase is None:
        raise ValueError("segmenter has no phrase: call set_phrase first")
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path, masks_path = out_dir / "overlay.mp4", out_dir / "masks.zip"
    timings: dict[str, list[float]] = {s: [] for s in CLIP_STAGES}
    areas: list[float] = []
    stats = LatencyStats()
    total = min(info.frames, max_frames)
    source = FileSource(info.path)
    writer = H264Writer(video_path, size=(info.width, info.height), fps=info.fps)
    t_start = time.perf_counter()
    try:
        with zipfile.ZipFile(masks_path, "w", compression=zipfile.ZIP_STORED) as zf:
            while True:
                t0 = time.perf_counter()
                try:
                    frame = source.read()
                except EndOfStream:
                    break
                if frame is None:  # file sources never time out; guard anyway
                    break
                if frame.index >= max_frames:
                    raise UploadError(
                        f"the video has more than {max_frames} frames (--max-frames); "
                        "trim it and upload again"
                    )
                if frame.image.shape[:2] != (info.height, info.width):
                    raise UploadError(
                        f"frame {frame.index} is {frame.image.shape[1]}x{frame.image.shape[0]}, "
                        f"the video started at {info.width}x{info.height}"
                    )
                t1 = time.perf_counter()
                result = segmenter.step(frame)
                t2 = time.perf_counter()
                writer.write(draw_mask(frame.image, result.mask, style))
                zf.writestr(f"mask_{frame.index:05d}.png", mask_to_png_bytes(result.mask))
                t3 = time.perf_counter()
                row = {
                    "decode": (t1 - t0) * 1e3,
                    "flow": result.timings.get("flow", 0.0),
                    "network": result.timings.get("network", 0.0),
                    "postprocess": result.timings.get("postprocess", 0.0),
                    "overlay": (t3 - t2) * 1e3,
                    "total": (t3 - t0) * 1e3,
                }
                for stage, ms in row.items():
                    timings[stage].append(ms)
                stats.add("capture", row["decode"])
                stats.add("flow", row["flow"])
                stats.add("inference", row["network"] + row["postprocess"])
                stats.add("overlay", row["overlay"])
                stats.add("end_to_end", row["total"])
                areas.append(result.area)
                if progress is not None:
                    progress(frame.index + 1, max(total, frame.index + 1))
        frames = len(areas)
        if frames == 0:
            raise UploadError("no frame of the video could be decoded")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        source.close()
    wall = time.perf_counter() - t_start
    engine: Engine = segmenter.engine
    phrase = segmenter.phrase or ""
    summary = {
        "phrase": phrase,
        "frames": frames,
        "size": [info.width, info.height],
        "video_fps": info.fps,
        "processing_fps": round(frames / wall, 2) if wall > 0 else 0.0,
        "backend": engine.backend,
        "device": engine.device,
        "input_size": list(engine.input_size),
        "threshold": segmenter.threshold,
        "stages_ms": {s: _percentiles(v) for s, v in timings.items()},
        "mask_area": {
            "mean": round(float(np.mean(areas)), 5),
            "frames_with_mask": int(np.count_nonzero(np.asarray(areas) > 0)),
        },
    }
    plot = latency_plot(
        {s: v for s, v in timings.items() if s != "decode"},
        title=f"latency per frame: {engine.backend} {engine.input_size[0]}x{engine.input_size[1]}, "
        f'"{phrase}"',
    )
    logger.info("segmented %d frames at %.1f fps (%s)", frames, summary["processing_fps"], phrase)
    return ClipResult(video_path, masks_path, plot, frames, phrase, json_safe(summary))


class LiveSession:
    """One browser session's live webcam state: its own segmenter, phrase and statistics.

    Held in a ``gr.State`` (one per browser session); never shared between sessions.
    :attr:`last_result` is the newest frame's :class:`engine.session.Result`. Frames of
    one session that arrive while the previous one is still being processed are dropped (the
    newest frame wins, as for every live source).

    Args:
        engine: The (shared, thread-safe) engine.
        threshold: Mask threshold in (0, 1).
        style: Overlay style.
    """

    def __init__(
        self, engine: Engine, *, threshold: float, style: OverlayStyle | None = None
    ) -> None:
        self.segmenter = Segmenter(engine, threshold=threshold)
        self.stats = LatencyStats(window=512, fps_window=30)
        self.style = style or OverlayStyle()
        self.dropped = 0
        self.last_result: Result | None = None  # the newest frame's segmentation
        self._busy = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine this session runs on."""
        return self.segmenter.engine

    @property
    def threshold(self) -> float:
        """The session's mask threshold."""
        return self.segmenter.threshold

    def set_phrase(self, phrase: str) -> None:
        """Use ``phrase`` from the next frame (no-op when it is already the current one).

        Raises:
            ValueError: the model rejects it (empty, too many characters or tokens).
        """
        if self.segmenter.engine.tokenizer.normalize(phrase) != self.segmenter.phrase:
            self.segmenter.set_phrase(phrase)

    def step(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        """Segment one webcam frame and draw the mask and the statistics on it.

        Args:
            frame_rgb: (H, W, 3) uint8 RGB (as the browser sends it); RGBA and grey accepted.

        Returns:
            (H, W, 3) uint8 RGB overlay, or ``None`` when the frame was dropped because the
            previous one is still being processed.

        Raises:
            ValueError: not an (H, W), (H, W, 3) or (H, W, 4) uint8 image.
        """
        if (
            not isinstance(frame_rgb, np.ndarray)
            or frame_rgb.dtype != np.uint8
            or not (frame_rgb.ndim == 2 or (frame_rgb.ndim == 3 and frame_rgb.shape[2] in (3, 4)))
        ):
            raise ValueError(
                "webcam frame must be an (H, W), (H, W, 3) or (H, W, 4) uint8 image, got "
                f"{getattr(frame_rgb, 'shape', type(frame_rgb))} {getattr(frame_rgb, 'dtype', '')}"
            )
        if frame_rgb.ndim == 2:
            frame_rgb = cv2.cvtColor(frame_rgb, cv2.COLOR_GRAY2RGB)
        if not self._busy.acquire(blocking=False):
            self.dropped += 1
            return None
        try:
            t0 = time.monotonic()
            bgr = cv2.cvtColor(np.ascontiguousarray(frame_rgb[:, :, :3]), cv2.COLOR_RGB2BGR)
            result = self.segmenter.step(bgr)
            self.last_result = result
            t1 = time.monotonic()
            out = draw_mask(bgr, result.mask, self.style)
            t2 = time.monotonic()
            flow_end = min(t0 + result.timings.get("flow", 0.0) / 1e3, t1)
            self.stats.record(
                Stamps(capture=t0, flow_start=t0, flow_end=flow_end, infer_end=t1, overlay_end=t2)
            )
            draw_hud_inplace(out, self.hud())
            return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
        finally:
            self._busy.release()

    def stage_ms(self) -> dict[str, tuple[float, float]]:
        """Stage -> (p50, p95) milliseconds over the recent frames (NaN before any)."""
        out = {}
        for stage in ("flow", "inference", "overlay", "end_to_end"):
            p = self.stats.percentiles(stage)
            out[stage] = (p["p50"], p["p95"])
        return out

    def hud(self) -> list[str]:
        """The statistics as text lines (fps, per-stage p50/p95, dropped frames, phrase)."""
        return hud_lines(
            fps=self.stats.fps(),
            stage_ms=self.stage_ms(),
            dropped=self.dropped,
            phrase=self.segmenter.phrase,
            extra=[
                f"{self.engine.backend} {self.engine.input_size[0]}x{self.engine.input_size[1]}"
            ],
        )
