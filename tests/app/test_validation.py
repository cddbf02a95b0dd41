"""Upload, phrase, engine and threshold checks (no server)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from app_helpers import write_plain_clip

from app.validation import (
    SAFE_NAME,
    PhraseError,
    UploadError,
    UploadLimits,
    check_backend,
    check_phrase,
    check_threshold,
    check_video,
)

LIMITS = UploadLimits(max_mb=5, max_seconds=10, max_frames=30, max_side=640)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_plain_clip(tmp_path_factory.mktemp("v") / "clip.mp4", frames=12)


def test_good_clip(clip, tmp_path):
    info = check_video(clip, limits=LIMITS, workdir=tmp_path / "w")
    assert (info.width, info.height, info.frames) == (64, 48, 12)
    assert info.fps == pytest.approx(25.0)
    assert info.seconds == pytest.approx(12 / 25)
    assert info.path == tmp_path / "w" / SAFE_NAME  # opened under a fixed name, not the upload's
    assert info.path.read_bytes() == clip.read_bytes()


def test_name_does_not_matter(clip, tmp_path):
    """A name FFmpeg would treat as an image-sequence pattern or protocol is never used."""
    odd = tmp_path / "frame%03d.png"
    odd.write_bytes(clip.read_bytes())
    assert check_video(odd, limits=LIMITS, workdir=tmp_path / "w").frames == 12


@pytest.mark.parametrize("value", [None, "", "   "])
def test_nothing_uploaded(value, tmp_path):
    with pytest.raises(UploadError, match="no video uploaded"):
        check_video(value, limits=LIMITS, workdir=tmp_path)


def test_missing_and_directory(tmp_path):
    with pytest.raises(UploadError, match="not a file"):
        check_video(tmp_path / "gone.mp4", limits=LIMITS, workdir=tmp_path / "w")
    with pytest.raises(UploadError, match="not a file"):
        check_video(tmp_path, limits=LIMITS, workdir=tmp_path / "w")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(UploadError, match="empty"):
        check_video(tmp_path / "empty.mp4", limits=LIMITS, workdir=tmp_path / "w")


def test_too_big(clip, tmp_path):
    limits = UploadLimits(max_mb=clip.stat().st_size / 2e6)
    with pytest.raises(UploadError, match="MB; this server takes videos up to"):
        check_video(clip, limits=limits, workdir=tmp_path)


@pytest.mark.parametrize("kind", ["text", "png", "random"])
def test_not_a_video(kind, tmp_path):
    path = tmp_path / "fake.mp4"
    if kind == "text":
        path.write_text("#!/bin/sh\necho hello\n")
    elif kind == "png":
        ok, buf = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
        path.write_bytes(buf.tobytes())
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(UploadError, match="not a video"):
        check_video(path, limits=LIMITS, workdir=tmp_path / "w")


def test_too_many_frames_and_seconds(tmp_path):
    long = write_plain_clip(tmp_path / "long.mp4", frames=40)
    with pytest.raises(UploadError, match="40 frames; this server takes up to 30 frames"):
        check_video(long, limits=LIMITS, workdir=tmp_path / "w")
    with pytest.raises(UploadError, match=r"1\.6 s long; this server takes up to 1 s"):
        check_video(long, limits=UploadLimits(max_seconds=1), workdir=tmp_path / "w")


def test_too_large_frames(tmp_path):
    wide = write_plain_clip(tmp_path / "wide.mp4", frames=3, size=(160, 48))
    with pytest.raises(UploadError, match="largest side allowed is 64"):
        check_video(wide, limits=UploadLimits(max_side=64), workdir=tmp_path / "w")


@pytest.mark.parametrize(
    "kwargs", [{"max_mb": 0}, {"max_seconds": -1}, {"max_frames": 1}, {"max_side": 8}]
)
def test_bad_limits(kwargs):
    with pytest.raises(ValueError):
        UploadLimits(**kwargs)


def test_phrase():
    assert check_phrase("  the  red\tcar ", max_chars=20) == "the red car"
    with pytest.raises(PhraseError, match="empty"):
        check_phrase(" \n ", max_chars=20)
    with pytest.raises(PhraseError, match="21 characters; the limit is 20"):
        check_phrase("x" * 21, max_chars=20)
    with pytest.raises(PhraseError, match="must be text"):
        check_phrase(None, max_chars=20)


def test_threshold_and_backend():
    assert check_threshold("0.3") == 0.3
    for bad in (0, 1, -0.5, "abc", None, float("nan")):
        with pytest.raises(ValueError, match=r"threshold must be"):
            check_threshold(bad)
    assert check_backend("onnx", choices=("onnx", "torch")) == "onnx"
    with pytest.raises(ValueError, match="valid: onnx, torch"):
        check_backend("tensorrt", choices=("onnx", "torch"))


def test_check_keyframes_takes_the_page_choices_and_their_forms():
    from app.validation import KEYFRAME_CHOICES, check_keyframes

    assert [str(check_keyframes(label)) for label in KEYFRAME_CHOICES] == [
        "1",
        "2",
        "3",
        "adaptive",
    ]
    assert str(check_keyframes("adaptive")) == "adaptive" and check_keyframes(None).always
    with pytest.raises(ValueError, match="keyframes must be one of"):
        check_keyframes("every 7th frame")
