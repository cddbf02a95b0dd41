"""Clip processing and live sessions on a real (tiny) engine, without the server."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from app_helpers import (
    assert_masks_match,
    count_frames,
    read_masks_zip,
    reference_masks,
    write_plain_clip,
)

from app.engines import SharedEngine
from app.processing import LiveSession, segment_clip
from app.validation import UploadError, UploadLimits, check_video
from engine.session import Segmenter


@pytest.fixture(scope="module")
def shared(tiny_engine) -> SharedEngine:
    return SharedEngine(tiny_engine)


def _frames(clip) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(clip.path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def test_segment_clip(shared, tiny_engine, target_clip, tmp_path):
    info = check_video(target_clip.path, limits=UploadLimits(), workdir=tmp_path / "in")
    seg = Segmenter(shared, threshold=0.5)
    seg.set_phrase(target_clip.phrase)
    calls = []
    result = segment_clip(info, seg, out_dir=tmp_path / "out", max_frames=100,
                          progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert result.frames == target_clip.frames == count_frames(result.video)
    assert calls[-1] == (target_clip.frames, target_clip.frames) and len(calls) == result.frames
    masks = read_masks_zip(result.masks)
    want = reference_masks(tiny_engine, target_clip.path, target_clip.phrase)
    assert_masks_match(masks, want, agree=0.999)  # torch CPU may flip a pixel at the threshold
    assert result.plot.ndim == 3 and result.summary["frames"] == result.frames


def test_segment_clip_stops_past_max_frames(shared, tmp_path):
    """A container that under-reports its length is still cut off while decoding."""
    clip = write_plain_clip(tmp_path / "c.mp4", frames=12)
    info = check_video(clip, limits=UploadLimits(), workdir=tmp_path / "in")
    seg = Segmenter(shared)
    seg.set_phrase("the red circle")
    with pytest.raises(UploadError, match="more than 5 frames"):
        segment_clip(info, seg, out_dir=tmp_path / "out", max_frames=5)


def test_two_live_sessions_never_mix(shared, tiny_engine, target_clip):
    """Interleaved frames of two sessions on one shared engine: each gets its own phrase's
    masks, the same as a session that ran alone."""
    frames = _frames(target_clip)[:4]
    phrases = ("the purple triangle", "the big orange circle moving up")
    sessions = [LiveSession(shared, threshold=0.5) for _ in phrases]
    for s, p in zip(sessions, phrases):
        s.set_phrase(p)
    masks = {p: [] for p in phrases}
    for frame in frames:
        for s, p in zip(sessions, phrases):
            out = s.step(frame)
            assert out is not None and out.shape == frame.shape
            masks[p].append(s.last_result.mask)
    for s, p in zip(sessions, phrases):
        assert s.segmenter.phrase == p
        alone = LiveSession(tiny_engine, threshold=0.5)
        alone.set_phrase(p)
        want = []
        for frame in frames:
            alone.step(frame)
            want.append(alone.last_result.mask)
        assert_masks_match(masks[p], want, agree=0.999)
    assert any((a != b).any() for a, b in zip(*masks.values())), "phrases gave the same masks"


def test_live_session_drops_frames_while_busy(shared):
    session = LiveSession(shared, threshold=0.5)
    session.set_phrase("the red circle")
    frame = np.zeros((48, 64, 3), np.uint8)
    assert session.step(frame) is not None
    session._busy.acquire()  # a request of this session is still running
    try:
        assert session.step(frame) is None and session.dropped == 1
    finally:
        session._busy.release()
    assert session.step(np.zeros((48, 64), np.uint8)).shape == (48, 64, 3)  # grey accepted
    with pytest.raises(ValueError, match="uint8 image"):
        session.step(np.zeros((48, 64, 2), np.uint8))
    with pytest.raises(ValueError):
        session.set_phrase("")
    assert session.segmenter.phrase == "the red circle"  # a rejected phrase changes nothing


def test_closing_a_live_session_stops_its_detector_thread(shared):
    """The page closes a session when Gradio deletes its state (a closed tab) or replaces it."""
    from app.ui import _close_session

    session = LiveSession(shared, threshold=0.5)
    thread = session.segmenter.instances._worker._thread
    assert thread.is_alive()
    _close_session(session)
    thread.join(5)
    assert not thread.is_alive()
    _close_session(None)  # a tab that never started the webcam
