"""The Segmenter session on a real engine (torch backend, real tiny HINet checkpoint)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.preprocess import sigmoid
from engine.session import PhraseNotSetError, PreparedFrame, Result, Segmenter
from engine.sources import FileSource, Frame


@pytest.fixture(scope="module")
def frames(video_file) -> list[Frame]:
    with FileSource(video_file) as src:
        return [src.read() for _ in range(6)]


def test_step_before_set_phrase_raises(engine, frames) -> None:
    seg = Segmenter(engine)
    with pytest.raises(PhraseNotSetError, match="set_phrase"):
        seg.step(frames[0])
    with pytest.raises(PhraseNotSetError, match="set_phrase"):
        seg.infer(seg.prepare(frames[0]))


@pytest.mark.parametrize(
    "bad", ["", "   ", "word " * 200, "x" * 10_000, "the red\x00circle", "the red c\u0430r"]
)
def test_bad_phrase_keeps_previous(engine, bad) -> None:
    seg = Segmenter(engine)
    seg.set_phrase("The  Red circle")
    assert seg.phrase == "the red circle"
    with pytest.raises(ValueError):
        seg.set_phrase(bad)
    assert seg.phrase == "the red circle"


def test_non_string_phrase(engine) -> None:
    with pytest.raises(ValueError, match="string"):
        Segmenter(engine).set_phrase(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.0}, "threshold"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"smoothing": -0.1}, "smoothing"),
        ({"flow_preset": "turbo"}, "ultrafast"),
    ],
)
def test_bad_arguments(engine, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        Segmenter(engine, **kwargs)


def test_step_result(engine, frames) -> None:
    seg = Segmenter(engine, threshold=0.5)
    seg.set_phrase("the red circle")
    results = [seg.step(f) for f in frames]
    for f, r in zip(frames, results):
        assert isinstance(r, Result)
        assert r.mask.shape == f.image.shape[:2] and r.mask.dtype == bool
        assert r.prob.dtype == np.float32 and 0.0 <= r.prob.min() <= r.prob.max() <= 1.0
        np.testing.assert_array_equal(r.mask, r.prob > 0.5)
        assert r.frame_index == f.index and r.capture_time == f.timestamp
        assert r.phrase == "the red circle"
        assert r.timings == {}  # the session keeps no clock: only the pipeline stamps
        expected = float(r.prob[r.mask].mean()) if r.mask.any() else 0.0
        assert r.score == pytest.approx(expected)


def test_step_matches_engine_directly(engine, frames) -> None:
    """step() = prepare() + infer(): the same numbers as calling the engine by hand."""
    from engine.preprocess import prepare_flow, prepare_image

    seg = Segmenter(engine)
    text = seg.set_phrase("the small blue square")
    seg.step(frames[0])
    r = seg.step(frames[1])
    cfg = engine.config
    g0, g1 = seg.flow.gray(frames[0].image), seg.flow.gray(frames[1].image)
    flow = prepare_flow(seg.flow(g0, g1), engine.input_size, cfg.flow_gain)
    image = prepare_image(frames[1].image, engine.input_size, cfg.image_mean, cfg.image_std)
    logits = engine.segment(image, flow, text)
    prob = sigmoid(logits[0, 0])
    h, w = frames[1].image.shape[:2]
    prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(r.prob, prob, atol=1e-5)


def test_first_frame_zero_flow_then_motion(engine, frames) -> None:
    seg = Segmenter(engine)
    p0 = seg.prepare(frames[0])
    p1 = seg.prepare(frames[1])
    assert isinstance(p0, PreparedFrame)
    assert p0.image.shape == (1, 3, *engine.input_size) and p0.image.dtype == np.float32
    assert p0.flow.shape == (1, 2, *engine.input_size)
    assert not p0.flow.any()
    assert np.abs(p1.flow).max() > 0  # the square moves 3 px per frame to the right
    assert p1.flow[0, 0].mean() > 0
    assert seg.flow_state.prev_index == frames[1].index
    seg.reset()
    assert not seg.prepare(frames[2]).flow.any()


def test_observe_feeds_only_the_flow_state(engine, frames) -> None:
    """observe(prev) then prepare(frame) gives the same flow as prepare(prev), prepare(frame)."""
    a, b = Segmenter(engine), Segmenter(engine)
    a.prepare(frames[0])
    b.observe(frames[0])
    assert b.flow_state.prev_index == frames[0].index
    np.testing.assert_array_equal(a.prepare(frames[1]).flow, b.prepare(frames[1]).flow)


def test_capture_gap_resets_flow(engine, frames) -> None:
    """After a stream reconnect the previous frame is stale: zero flow, not garbage."""
    seg = Segmenter(engine, max_flow_gap=0.5)
    seg.prepare(frames[0])
    late = Frame(frames[1].image, frames[1].index, frames[0].timestamp + 5.0)
    assert not seg.prepare(late).flow.any()
    on_time = Frame(frames[2].image, frames[2].index, late.timestamp + 0.04)
    assert np.abs(seg.prepare(on_time).flow).max() > 0
    with pytest.raises(ValueError, match="max_flow_gap"):
        Segmenter(engine, max_flow_gap=0.0)


def test_raw_arrays_are_accepted(engine, frames) -> None:
    seg = Segmenter(engine)
    seg.set_phrase("the red circle")
    grey = frames[0].image[:, :, 1]  # (H, W) uint8
    r0 = seg.step(grey)
    r1 = seg.step(frames[1].image.astype(np.float32) / 255.0)
    assert (r0.frame_index, r1.frame_index) == (0, 1)
    assert r0.mask.shape == grey.shape


def test_temporal_smoothing_is_an_ema(engine, frames) -> None:
    s = 0.6
    raw, smooth = Segmenter(engine), Segmenter(engine, smoothing=s)
    for seg in (raw, smooth):
        seg.set_phrase("the red circle")
    raw_probs = [raw.step(f).prob for f in frames[:3]]
    smooth_probs = [smooth.step(f).prob for f in frames[:3]]
    np.testing.assert_allclose(smooth_probs[0], raw_probs[0], atol=1e-6)
    expect = raw_probs[0]
    for t in (1, 2):  # bilinear resizing is linear, so the EMA commutes with it
        expect = s * expect + (1 - s) * raw_probs[t]
        np.testing.assert_allclose(smooth_probs[t], expect, atol=1e-4)


def test_phrase_change_resets_smoothing_and_changes_output(engine, frames) -> None:
    seg = Segmenter(engine, smoothing=0.5)
    seg.set_phrase("the red circle")
    a = seg.step(frames[0])
    seg.set_phrase("a big yellow star moving right")
    assert seg.smoothing_state.ema is None
    seg.reset()
    b = seg.step(frames[0])
    assert b.phrase == "a big yellow star moving right"
    assert not np.allclose(a.prob, b.prob)  # the text really conditions the network


def test_result_validation() -> None:
    ok = {
        "mask": np.zeros((4, 4), bool),
        "prob": np.zeros((4, 4), np.float32),
        "score": 0.0,
        "frame_index": 0,
        "capture_time": 0.0,
        "phrase": "x",
    }
    Result(**ok)
    for key, value, match in [
        ("mask", np.zeros((4, 4), np.uint8), "bool"),
        ("prob", np.zeros((4, 5), np.float32), "shape"),
        ("prob", np.zeros((4, 4), np.float64), "float32"),
        ("score", 1.5, "score"),
        ("frame_index", -1, "frame_index"),
        ("timings", {"flow": -1.0}, "non-negative"),
    ]:
        with pytest.raises(ValueError, match=match):
            Result(**{**ok, key: value})
    assert Result(**{**ok, "mask": np.ones((4, 4), bool), "prob": np.ones((4, 4), np.float32),
                     "score": 1.0}).area == 1.0  # fmt: skip
