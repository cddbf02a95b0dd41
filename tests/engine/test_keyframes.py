"""Keyframes: the policy, the flow warp, and the session running the network only on keyframes."""

from __future__ import annotations

import numpy as np
import pytest

import run_stream
from engine.overlay import result_lines
from engine.session import KeyframePolicy, Segmenter, warp_probabilities
from engine.sources import FileSource


def test_policy_parse_and_checks() -> None:
    assert KeyframePolicy.parse("1").always and not KeyframePolicy.parse("3").always
    assert KeyframePolicy.parse(" 3 ").every == 3 and str(KeyframePolicy.parse("3")) == "3"
    assert KeyframePolicy.parse("Adaptive").adaptive
    for bad in ("0", "-2", "fast", "2.5", ""):
        with pytest.raises(ValueError, match="period >= 1 or 'adaptive'"):
            KeyframePolicy.parse(bad)
    with pytest.raises(ValueError):
        KeyframePolicy(area_change=1.0)


def test_warp_moves_a_blob_along_the_flow() -> None:
    prob = np.zeros((40, 48), np.float32)
    prob[10:20, 12:22] = 1.0
    flow = np.zeros((20, 24, 2), np.float32)  # a coarser flow grid: vectors are rescaled
    flow[..., 0], flow[..., 1] = 1.5, -1.0  # +3 px right, -2 px up at 48x40
    moved = warp_probabilities(prob, flow)
    want = np.zeros_like(prob)
    want[8:18, 15:25] = 1.0
    np.testing.assert_allclose(moved, want, atol=1e-5)
    # the edge case of forward flow: only the object moves; its new place still gets it
    local = np.zeros((40, 48, 2), np.float32)
    local[10:20, 12:22, 0] = 4.0  # the blob's own pixels move 4 px right
    moved = warp_probabilities(prob, local)
    assert moved[12:18, 18:26].min() > 0.99 and moved[12:18, 12:14].max() < 0.01


def _count_calls(engine):
    """Count the network runs: the session calls ``segment_prior`` (``segment`` wraps it)."""
    calls = []
    original = engine.segment_prior

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    engine.segment_prior = counting
    return calls


def test_every_third_frame_runs_the_network_and_a_phrase_change_forces_one(
    engine, video_file
) -> None:
    seg = Segmenter(engine, keyframes=KeyframePolicy(every=3))
    seg.set_phrase("the red circle")
    calls = _count_calls(engine)
    try:
        with FileSource(video_file) as src:
            frames = [f for _, f in zip(range(8), src)]
        results = [seg.step(f) for f in frames[:5]]
        seg.set_phrase("the square moving left")  # a new referent: a keyframe at once
        results += [seg.step(f) for f in frames[5:]]
    finally:
        del engine.segment_prior
    assert [r.inferred for r in results] == [True, False, False, True, False, True, False, False]
    assert len(calls) == 3
    warped = results[1]
    assert warped.mask.shape == frames[1].image.shape[:2] and warped.prob.dtype == np.float32
    assert result_lines(warped)[1].endswith("[warped]")
    assert not result_lines(results[0])[1].endswith("[warped]")


def test_every_frame_is_the_default_and_gives_the_plain_results(engine, video_file) -> None:
    plain, keyed = Segmenter(engine), Segmenter(engine, keyframes=KeyframePolicy())
    for s in (plain, keyed):
        s.set_phrase("the red circle")
    with FileSource(video_file) as src:
        for _, f in zip(range(4), src):
            a, b = plain.step(f), keyed.step(f)
            assert a.inferred and b.inferred
            np.testing.assert_array_equal(a.prob, b.prob)


def test_cli_rejects_a_bad_keyframes_value(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        run_stream.main(["--keyframes", "often", "--no-display"])
    assert info.value.code == run_stream.EXIT_USAGE
    assert "--keyframes: keyframes must be a period >= 1 or 'adaptive'" in capsys.readouterr().err
