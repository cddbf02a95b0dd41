"""Training rewording and the held-out paraphrase lexicon: same meaning, disjoint words."""

from __future__ import annotations

import re

import numpy as np
import pytest

from training.synthetic.grammar import LEXICON, MOTIONS
from training.synthetic.wording import PARAPHRASE, TRAIN_EXTRA, paraphrase, reword, training_forms

_WORD = re.compile(r"[a-z-]+")


def _training_words() -> set[str]:
    words = set()
    for attribute, values in LEXICON.items():
        for value in values:
            for form in (training_forms(attribute, value) if attribute != "motion_adjective"
                         else LEXICON[attribute][value]):  # fmt: skip
                words.update(_WORD.findall(form))
    return words | {"the", "that", "is", "and"}


def test_no_paraphrase_form_is_a_training_form():
    for attribute, values in PARAPHRASE.items():
        for value, forms in values.items():
            train = set(training_forms(attribute, value))
            assert not set(forms) & train, (attribute, value)
            for other in values:  # nor a training form of another value
                assert not set(forms) & set(training_forms(attribute, other))


def test_paraphrase_size_and_colour_words_are_never_seen_in_training():
    seen = _training_words()
    for attribute in ("size", "colour"):
        for forms in PARAPHRASE[attribute].values():
            for form in forms:
                assert not set(_WORD.findall(form)) & seen, form
    # the relative pronoun of the paraphrase clauses is new too
    assert "which" not in seen


def test_every_canonical_value_has_forms():
    for attribute in ("shape", "size", "colour", "motion"):
        assert set(PARAPHRASE[attribute]) == set(LEXICON[attribute])
        assert set(TRAIN_EXTRA[attribute]) <= set(LEXICON[attribute])
    assert set(PARAPHRASE["motion"]) == set(MOTIONS)


@pytest.mark.parametrize("fn", [reword, paraphrase])
def test_wordings_keep_the_meaning(fn):
    """Every attribute the referent was named by is said, in that attribute's own forms."""
    forms_of = (
        (lambda a, v: training_forms(a, v)) if fn is reword else (lambda a, v: PARAPHRASE[a][v])
    )
    rng = np.random.default_rng(0)
    attrs = {"shape": "star", "size": "small", "colour": "red", "motion": "left"}
    for _ in range(50):
        text = fn(attrs, rng)
        for attribute, value in attrs.items():
            assert any(form in text for form in forms_of(attribute, value)), (attribute, text)
        for other in ("right", "up", "down"):  # and no other motion
            assert not any(form in text for form in forms_of("motion", other)), text
    shape_only = fn({"shape": "ring"}, np.random.default_rng(1))
    assert shape_only.startswith("the ") and " and " not in shape_only


def test_paraphrase_split_is_the_same_referents_in_other_words():
    from training.synthetic.dataset import SyntheticDataset
    from training.synthetic.testset import TEST_SPEC, fixed_test_seeds

    seeds = fixed_test_seeds("appearance")[:3]
    grammar = SyntheticDataset(split="appearance", seeds=seeds, spec=TEST_SPEC, flow_preset=None)
    para = SyntheticDataset(split="appearance", seeds=seeds, spec=TEST_SPEC, flow_preset=None,
                            wording="paraphrase")  # fmt: skip
    assert len(grammar) == len(para)
    for i in range(0, len(grammar), 5):
        a, b = grammar[i], para[i]
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.attributes == b.attributes and a.expression != b.expression
        assert (a.split, b.split) == ("appearance", "appearance/paraphrase")
    # fixed per referent: the same words on every frame, and on every run
    assert len({para[i].expression for i in range(TEST_SPEC.frames)}) == 1
    again = SyntheticDataset(split="appearance", seeds=seeds, spec=TEST_SPEC, flow_preset=None,
                             wording="paraphrase")  # fmt: skip
    assert [again[i].expression for i in range(len(again))] == [
        para[i].expression for i in range(len(para))
    ]


def test_training_rewording_is_applied_by_the_augmentation():
    from models.config import build_config
    from models.tokenizer import Tokenizer
    from training.sample import Sample
    from training.torch_data import AugmentConfig, ReferringTorchDataset

    frame = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    sample = Sample(frame=frame, prev_frame=None, flow=None, expression="the red star",
                    mask=mask, dataset="synthetic", video_id="v", frame_index=0, object_id="1",
                    attributes={"shape": "star", "colour": "red"})  # fmt: skip
    rng = np.random.default_rng(0)
    corpus = ["the red star"] + [reword(sample.attributes, rng) for _ in range(200)]
    tok = Tokenizer.train(corpus, vocab_size=128)
    config = build_config("hinet_tiny", input_size=(64, 64))
    texts = set()
    for p in (0.0, 1.0):
        ds = ReferringTorchDataset([sample] * 8, tokenizer=tok, config=config,
                                   augment=AugmentConfig(hflip=0.0, reword=p))  # fmt: skip
        texts.add(tuple(tuple(ds[i]["token_ids"].tolist()) for i in range(8)))
    plain, reworded = sorted(texts, key=lambda t: len(set(t)))
    assert len(set(plain)) == 1  # reword 0: always the generator's wording
    assert len(set(reworded)) > 1  # reword 1: varied wordings
