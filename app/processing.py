"""What the page does with frames: whole uploaded clips, and live webcam frames per session.

Both run the stream's own stages (:class:`engine.pipeline.Stages`: the session code, the
overlay, the one clock and its statistics). A clip goes through a sequential
:class:`engine.pipeline.Pipeline` whose sinks write three files:

* ``overlay.mp4``: every frame with the mask drawn, H.264 (browser-playable), same frame count,
  size and frame rate as the upload;
* ``masks.zip``: one 8-bit PNG per frame, ``mask_00000.png`` ... (0 background, 255 object), at
  the video's size — lossless, readable by any image library;
* a latency plot (per-stage work milliseconds against the frame index);

and a summary (``summary.json``: frames, fps, work and wait per stage, the bottleneck, scores).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.plot import latency_plot
from app.validation import UploadError, VideoInfo
from engine.base import Engine
from engine.instances import DEFAULT_EVERY, InstanceEvidence
from engine.latency import STAGES, LatencyStats, json_safe
from engine.outputs import CallbackOutput, H264FileOutput, MaskZipOutput
from engine.overlay import OverlayStyle
from engine.pipeline import Pipeline
from engine.session import KeyframePolicy, Result, Segmenter
from engine.sources import FileSource, Frame
from engine.stages import Stages

__all__ = ["ClipResult", "LiveSession", "segment_clip"]

logger = logging.getLogger(__name__)

#: Stages drawn in a clip's latency plot (``capture`` is the wait before the flow stage: ~0
#: when frames are processed one after another).
PLOT_STAGES = tuple(s for s in STAGES if s != "capture")


@dataclass(frozen=True)
class ClipResult:
    """A processed clip.

    Attributes:
        video: H.264 mp4 with the overlay.
        masks: Zip of per-frame PNG masks.
        plot: (H, W, 3) uint8 RGB latency plot.
        frames: Frames processed (= frames in ``video`` and PNGs in ``masks``).
        phrase: The normalised phrase used.
        summary: JSON-able facts: backend, input size, fps, per-stage work and wait
            percentiles, the bottleneck, scores and mask areas (also in ``summary_file``).
        summary_file: ``summary.json`` next to the video.
    """

    video: Path
    masks: Path
    summary_file: Path
    plot: np.ndarray
    frames: int
    phrase: str
    summary: dict[str, Any] = field(default_factory=dict)


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
        UploadError: more than ``max_frames`` frames, a frame of another size, or no frame.
        engine.outputs.FFmpegError: encoding failed.
    """
    if segmenter.phrase is None:
        raise ValueError("segmenter has no phrase: call set_phrase first")
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path, masks_path = out_dir / "overlay.mp4", out_dir / "masks.zip"
    per_frame: dict[str, list[float]] = {s: [] for s in PLOT_STAGES}
    areas: list[float] = []
    scores: list[float] = []
    found: list[bool] = []
    inferred: list[bool] = []
    total = min(info.frames, max_frames)

    def check(image: np.ndarray, result: Result, frame: Frame) -> None:
        if frame.index >= max_frames:
            raise UploadError(
                f"the video has more than {max_frames} frames; this server takes up to "
                f"{max_frames}: trim it and upload again"
            )
        if frame.image.shape[:2] != (info.height, info.width):
            raise UploadError(
                f"frame {frame.index} is {frame.image.shape[1]}x{frame.image.shape[0]}, "
                f"the video started at {info.width}x{info.height}"
            )

    def collect(image: np.ndarray, result: Result, frame: Frame) -> None:
        for stage in PLOT_STAGES:
            per_frame[stage].append(result.timings[stage])
        areas.append(result.area)
        scores.append(result.score)
        found.append(result.found)
        inferred.append(result.inferred)
        if progress is not None:
            progress(frame.index + 1, max(total, frame.index + 1))

    video = H264FileOutput(video_path, fps=info.fps)
    pipeline = Pipeline(
        FileSource(info.path),
        segmenter,
        outputs=[CallbackOutput(check), video, MaskZipOutput(masks_path), CallbackOutput(collect)],
        style=style,
        hud=False,
        mode="sequential",
    )
    t_start = time.perf_counter()
    try:
        stats = pipeline.run()
    except BaseException:
        video.abort()
        raise
    wall = time.perf_counter() - t_start
    frames = len(areas)
    if frames == 0:
        raise UploadError("no frame of the video could be decoded")
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
        "keyframes": str(segmenter.keyframes),
        "frames_inferred": int(sum(inferred)),
        "stages_ms": stats["stages_ms"],
        "wait_ms": stats["wait_ms"],
        "bottleneck": stats["bottleneck"],
        "score": {
            "mean_when_found": float(np.mean([s for s, f in zip(scores, found) if f] or [0.0])),
            "frames_found": int(sum(found)),
        },
        "mask_area": {
            "mean": round(float(np.mean(areas)), 5),
            "frames_with_mask": int(np.count_nonzero(np.asarray(areas) > 0)),
        },
    }
    summary_file = out_dir / "summary.json"
    summary_file.write_text(json.dumps(json_safe(summary), indent=2) + "\n", encoding="utf-8")
    plot = latency_plot(
        per_frame,
        title=f"latency per frame: {engine.backend} {engine.input_size[0]}x{engine.input_size[1]}, "
        f'"{phrase}"',
    )
    logger.info("segmented %d frames at %.1f fps (%s)", frames, summary["processing_fps"], phrase)
    return ClipResult(
        video_path, masks_path, summary_file, plot, frames, phrase, json_safe(summary)
    )


class LiveSession:
    """One browser session's live webcam state: its own segmenter, phrase and statistics.

    Held in a ``gr.State`` (one per browser session); never shared between sessions. Each
    frame goes through the stream's :class:`engine.pipeline.Stages` (one after another: the
    browser sends one frame per request). :attr:`last_result` is the newest frame's
    :class:`engine.session.Result`. Frames of one session that arrive while the previous one is
    still being processed are dropped (the newest frame wins, as for every live source).

    Args:
        engine: The (shared, thread-safe) engine.
        threshold: Mask threshold in (0, 1).
        style: Overlay style.
        keyframes: When the network runs (:class:`engine.session.KeyframePolicy`; default:
            every frame).
        instances: Instance evidence (the COCO detector in its own thread, as in the stream);
            ``False``: the network alone.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        threshold: float,
        style: OverlayStyle | None = None,
        keyframes: KeyframePolicy | None = None,
        instances: bool = True,
    ) -> None:
        evidence = InstanceEvidence(every=DEFAULT_EVERY, background=True) if instances else None
        self.segmenter = Segmenter(engine, threshold=threshold, keyframes=keyframes,
                                   instances=evidence)  # fmt: skip
        self.dropped = 0
        self.stages = Stages(
            self.segmenter,
            style=style,
            hud=False,  # the page shows the numbers in a table beside the picture
            stats=LatencyStats(window=512, fps_window=30),
            dropped=lambda: self.dropped,
        )
        self.last_result: Result | None = None  # the newest frame's segmentation
        self._busy = threading.Lock()
        self._index = 0

    @property
    def engine(self) -> Engine:
        """The engine this session runs on."""
        return self.segmenter.engine

    def close(self) -> None:
        """Stop the instance evidence's detector thread (the page's session ended)."""
        if self.segmenter.instances is not None:
            self.segmenter.instances.close()

    @property
    def stats(self) -> LatencyStats:
        """The session's stage statistics."""
        return self.stages.stats

    @property
    def threshold(self) -> float:
        """The session's mask threshold."""
        return self.segmenter.threshold

    @property
    def keyframes(self) -> KeyframePolicy:
        """When the session's network runs."""
        return self.segmenter.keyframes

    def set_phrase(self, phrase: str) -> None:
        """Use ``phrase`` from the next frame (no-op when it is already the current one).

        Raises:
            ValueError: the model rejects it (empty, too many characters or tokens).
        """
        if self.segmenter.engine.tokenizer.normalize(phrase) != self.segmenter.phrase:
            self.segmenter.set_phrase(phrase)

    def step(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        """Segment one webcam frame and draw its mask (nothing when "not found").

        The picture keeps the camera's size; the statistics, score and "not found" are in the
        page's table beside it.

        Args:
            frame_rgb: (H, W, 3) uint8 RGB (as the browser sends it); RGBA and grey accepted.

        Returns:
            (H, W, 3) uint8 RGB overlay, or ``None`` when the frame was dropped because the
            previous one is still being processed.

        Raises:
            ValueError: not an (H, W), (H, W, 3) or (H, W, 4) uint8 image.
        """
        arrived = time.monotonic()  # the frame's capture time: when the request brought it
        if (
            not isinstance(frame_rgb, np.ndarray)
            or frame_rgb.dtype != np.uint8
            or not (frame_rgb.ndim == 2 or (frame_rgb.ndim == 3 and frame_rgb.shape[2] in (3, 4)))
        ):
            raise ValueError(
                "webcam frame must be an (H, W), (H, W, 3) or (H, W, 4) uint8 image, got "
                f"{getattr(frame_rgb, 'shape', type(frame_rgb))} {getattr(frame_rgb, 'dtype', '')}"
            )
        if not self._busy.acquire(blocking=False):
            self.dropped += 1
            return None
        try:
            if frame_rgb.ndim == 2:
                bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_GRAY2BGR)
            else:
                bgr = cv2.cvtColor(np.ascontiguousarray(frame_rgb[:, :, :3]), cv2.COLOR_RGB2BGR)
            frame = Frame(bgr, self._index, arrived)
            self._index += 1
            out, self.last_result = self.stages.process(frame)
            return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
        finally:
            self._busy.release()
