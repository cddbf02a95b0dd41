"""The session's second "not found" rule: a grounding-prior model's confidence (``min_prior``)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.session import DEFAULT_MIN_PRIOR, KeyframePolicy, Result, Segmenter
from engine.sources import FileSource, Frame


@pytest.fixture(scope="module")
def prior_engine(tiny_prior_checkpoint):
    from export.engines import create_engine

    engine = create_engine("torch", tiny_prior_checkpoint, input_size=(128, 160))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def frames(video_file) -> list[Frame]:
    with FileSource(video_file) as src:
        return [src.read() for _ in range(3)]


def _confident(engine, conf):
    """``segment_prior`` of ``engine`` as a confident full-frame mask with prior ``conf``."""
    h, w = engine.input_size
    return lambda image, flow, text, referent=None: (np.full((1, 1, h, w), 6.0, np.float32), conf)


def test_min_prior_decides_found_with_a_confident_mask(prior_engine, frames, monkeypatch):
    seg = Segmenter(prior_engine, min_score=0.5, min_prior=0.4)
    seg.set_phrase("the white van")
    for conf, found in ((0.39, False), (0.4, True), (0.9, True)):
        monkeypatch.setattr(prior_engine, "segment_prior", _confident(prior_engine, conf))
        r = seg.step(frames[0])
        assert r.mask.all() and r.score > 0.99  # the network alone would call it found
        assert r.prior_conf == conf and r.found is found
        assert bool(r.shown_mask.any()) is found
    monkeypatch.setattr(prior_engine, "segment_prior", _confident(prior_engine, None))
    r = seg.step(frames[1])  # a model without the prior (or switched off): the score decides
    assert r.prior_conf is None and r.found


def test_the_real_prior_confidence_reaches_the_result(prior_engine, frames):
    seg = Segmenter(prior_engine, min_score=0.0, min_prior=0.0)
    seg.set_phrase("the white van")
    r = seg.step(frames[0])
    assert r.prior_conf is not None and 0.0 <= r.prior_conf <= 1.0
    strict = Segmenter(prior_engine, min_score=0.0, min_prior=min(r.prior_conf + 0.01, 0.99))
    strict.set_phrase("the white van")
    assert not strict.step(frames[0]).found


def test_frames_between_keyframes_keep_the_keyframe_confidence(prior_engine, frames):
    seg = Segmenter(prior_engine, min_score=0.0, keyframes=KeyframePolicy(every=3))
    seg.set_phrase("the white van")
    key, between = seg.step(frames[0]), seg.step(frames[1])
    assert key.inferred and not between.inferred
    assert between.prior_conf == key.prior_conf is not None


def test_bad_min_prior_and_prior_conf_are_refused(prior_engine):
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="min_prior"):
            Segmenter(prior_engine, min_prior=bad)
    with pytest.raises(ValueError, match="prior_conf"):
        Result(mask=np.zeros((2, 2), bool), prob=np.zeros((2, 2), np.float32), score=0.0,
               frame_index=0, capture_time=0.0, phrase="x", prior_conf=1.5)  # fmt: skip
    assert 0.0 < DEFAULT_MIN_PRIOR < 1.0
