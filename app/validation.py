"""Checks on what a browser sends: uploaded videos, phrases, backend and threshold choices.

An upload is never trusted by its name or path: :func:`check_video` links (or copies) it to a
fixed, harmless name in a private folder and opens that with OpenCV's FFmpeg backend, so a file
name can neither select an FFmpeg protocol or image-sequence pattern nor pass a size or type
check by its extension. Nothing is executed. Every failure raises :class:`UploadError` (a
``ValueError``) with a message fit for the page.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from engine.session import KeyframePolicy

__all__ = [
    "KEYFRAME_CHOICES",
    "PhraseError",
    "UploadError",
    "UploadLimits",
    "VideoInfo",
    "check_backend",
    "check_keyframes",
    "check_phrase",
    "check_threshold",
    "check_video",
    "describe_phrase",
]

#: The fixed name an upload is opened under (no extension: FFmpeg probes the content).
SAFE_NAME = "upload-video"
#: Bytes in the MB the limits and messages use (the browser's upload check counts 2^20 too).
MB = 1 << 20


class UploadError(ValueError):
    """An uploaded file is missing, too big, too long or not a decodable video."""


class PhraseError(ValueError):
    """A phrase is not a string, empty or too long."""


@dataclass(frozen=True)
class UploadLimits:
    """What an uploaded video may be.

    Attributes:
        max_mb: Largest file size in MB of 2^20 bytes (the unit the browser's own size check
            reports, so the page, the browser and this check name the same number).
        max_seconds: Longest duration in seconds (frames / container fps).
        max_frames: Most frames processed; also enforced while decoding, so a container that
            under-reports its length is still cut off.
        max_side: Largest width or height in pixels.
    """

    max_mb: float = 200.0
    max_seconds: float = 60.0
    max_frames: int = 1800
    max_side: int = 3840

    def __post_init__(self) -> None:
        if not self.max_mb > 0 or not self.max_seconds > 0:
            raise ValueError(
                f"max_mb and max_seconds must be positive, got {self.max_mb}, {self.max_seconds}"
            )
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be >= 2, got {self.max_frames}")
        if self.max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {self.max_side}")


@dataclass(frozen=True)
class VideoInfo:
    """A checked upload.

    Attributes:
        path: The private, safely named link or copy to decode (not the uploaded path).
        width: Frame width in pixels.
        height: Frame height in pixels.
        fps: Frame rate from the container (25.0 when the container has none).
        frames: Frame count from the container (0 when unknown; decoding is bounded anyway).
        size_mb: File size in megabytes.
    """

    path: Path
    width: int
    height: int
    fps: float
    frames: int
    size_mb: float

    @property
    def seconds(self) -> float:
        """Duration from the container's frame count and fps (0.0 when unknown)."""
        return self.frames / self.fps if self.frames > 0 else 0.0


def _safe_copy(src: Path, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    dst = workdir / SAFE_NAME
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)  # same file system: no copy
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def check_video(
    path: str | os.PathLike[str] | None, *, limits: UploadLimits, workdir: Path
) -> VideoInfo:
    """Check an uploaded video and give it a safe name inside ``workdir``.

    Args:
        path: The uploaded file (as the server stored it), or ``None`` when nothing was sent.
        limits: Size, duration and resolution limits.
        workdir: A private folder for this request; the safe link/copy is made there.

    Returns:
        A :class:`VideoInfo` whose ``path`` is the one to decode.

    Raises:
        UploadError: nothing uploaded, not a regular file, empty, bigger than ``max_mb``, not
            decodable by OpenCV, fewer than 2 frames, larger than ``max_side`` or longer than
            ``max_seconds`` / ``max_frames``.
    """
    if path is None or (isinstance(path, str) and not path.strip()):
        raise UploadError("no video uploaded: choose a video file (mp4, webm, avi, mkv, mov)")
    src = Path(path)
    if not src.is_file():
        raise UploadError("the upload is not a file (it may have expired): upload it again")
    size = src.stat().st_size
    size_mb = size / MB
    if size == 0:
        raise UploadError("the uploaded file is empty")
    if size_mb > limits.max_mb:
        raise UploadError(
            f"the video is {size_mb:.1f} MB; this server takes videos up to {limits.max_mb:g} MB"
        )
    safe = _safe_copy(src, workdir)
    cap = cv2.VideoCapture(str(safe), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise UploadError(
                "the upload is not a video OpenCV can decode; use mp4 (H.264), webm, avi or mkv"
            )
        ok, first = cap.read()
        ok2, _ = cap.read() if ok else (False, None)
        if not ok or first is None or not ok2:
            raise UploadError(
                "the upload is not a video (fewer than 2 decodable frames); "
                "use mp4 (H.264), webm, avi or mkv"
            )
        height, width = first.shape[:2]
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps) or not 0.5 <= fps <= 1000.0:
            fps = 25.0
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames = max(frames, 0)
    finally:
        cap.release()
    if max(width, height) > limits.max_side:
        raise UploadError(
            f"the video is {width}x{height}; the largest side allowed is {limits.max_side} px"
        )
    info = VideoInfo(safe, width, height, fps, frames, size_mb)
    if frames > limits.max_frames:
        raise UploadError(
            f"the video has {frames} frames; this server takes up to {limits.max_frames} frames: "
            "trim it and upload again"
        )
    if info.seconds > limits.max_seconds:
        raise UploadError(
            f"the video is {info.seconds:.1f} s long; this server takes up to "
            f"{limits.max_seconds:g} s: trim it and upload again"
        )
    return info


def check_phrase(text: object, *, max_chars: int) -> str:
    """Strip a phrase and check it is a non-empty string of at most ``max_chars`` characters.

    The model's tokenizer checks the token count when the phrase is encoded.

    Raises:
        PhraseError: not a string, empty or too long.
    """
    if not isinstance(text, str):
        raise PhraseError(f"the phrase must be text, got {type(text).__name__}")
    phrase = " ".join(text.split())
    if not phrase:
        raise PhraseError("the phrase is empty: type what to segment, e.g. 'the red car'")
    if len(phrase) > max_chars:
        raise PhraseError(f"the phrase has {len(phrase)} characters; the limit is {max_chars}")
    return phrase


#: The page's keyframe choices: label -> :meth:`engine.session.KeyframePolicy.parse` form.
KEYFRAME_CHOICES = {
    "every frame": "1",
    "every 2nd frame (flow moves the mask between)": "2",
    "every 3rd frame (flow moves the mask between)": "3",
    "adaptive (when the flow says the warp drifts)": "adaptive",
}


def check_keyframes(value: object) -> KeyframePolicy:
    """A keyframe policy from one of :data:`KEYFRAME_CHOICES` (its label or its form).

    Raises:
        ValueError: anything else (the message lists the choices).
    """
    text = str(value).strip() if value is not None else "every frame"
    form = KEYFRAME_CHOICES.get(text, text)
    if form not in KEYFRAME_CHOICES.values():
        raise ValueError(f"keyframes must be one of: {', '.join(KEYFRAME_CHOICES)}; got {value!r}")
    return KeyframePolicy.parse(form)


def check_threshold(value: object) -> float:
    """A mask threshold strictly between 0 and 1.

    Raises:
        ValueError: not a number in (0, 1).
    """
    try:
        threshold = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    return threshold


def check_backend(value: object, *, choices: tuple[str, ...]) -> str:
    """One of the engine backends this server offers.

    Raises:
        ValueError: any other value (the message lists the valid ones).
    """
    if value not in choices:
        raise ValueError(f"unknown engine {value!r}; valid: {', '.join(choices)}")
    return str(value)


def describe_phrase(
    text: object, *, tokenizer: Any, max_tokens: int, max_chars: int
) -> tuple[bool, str]:
    """Check a phrase as it is typed and say what the model will make of it.

    Returns:
        ``(usable, message)``: whether the model accepts it, and one Markdown line: the error,
        or how many pieces of the limit it uses and the words the vocabulary does not hold
        whole (read as several pieces, or unknown).
    """
    if not isinstance(text, str) or not text.strip():
        return False, "Type what to segment, e.g. *the red car on the left*."
    norm = tokenizer.normalize(text)
    try:
        ids, mask = tokenizer.encode(norm, max_tokens=max_tokens, max_chars=max_chars)
    except ValueError as exc:
        return False, f"**Not usable:** {exc}"
    specials = getattr(tokenizer, "specials", 0)
    limit, used = max_tokens - specials, int(mask.sum()) - specials
    words = norm.split()
    per_word = max(1.0, used / max(1, len(words)))
    parts = [
        f"{len(words)} words, {used} of {limit} {getattr(tokenizer, 'unit', 'tokens')}: room "
        f"for about {int(limit / per_word)} words like these"
    ]
    unk = getattr(tokenizer, "unk_id", None)
    unknown = []
    for word in dict.fromkeys(words):  # each word once, in order
        pieces = tokenizer.tokenize(word)
        if unk is not None and unk in pieces:
            unknown.append(f"*{word}* (unknown)")
        elif len(pieces) > 1 and word.isalpha():
            unknown.append(f"*{word}* ({len(pieces)} pieces)")
    if unknown:
        parts.append("not in the vocabulary as whole words: " + ", ".join(unknown))
    return True, " · ".join(parts)
