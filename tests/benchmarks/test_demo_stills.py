"""The demo-stills benchmark: the CLI's table, JSON and PNG, and its errors."""

from __future__ import annotations

import json

import cv2
import pytest

from benchmarks.demo_stills import main


def test_cli_on_the_street_clip(tiny_minilm_checkpoint, tmp_path, capsys) -> None:
    out, png = tmp_path / "d.json", tmp_path / "d.png"
    code = main(["--checkpoint", str(tiny_minilm_checkpoint), "--backend", "torch",
                 "--clip", "street", "--no-instances", "--size", "64x96", "--phrase", "the van",
                 "--columns", "0,5",
                 "--json", str(out), "--png", str(png), "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "the cyclist" in printed and "the van" in printed
    report = json.loads(out.read_text())
    assert report["resolution"] == [64, 96] and report["clip"]["frames"] == 29
    own, van = report["phrases"]
    assert own["role"] == "clip's own" and 0.0 <= own["inside_box_mean"] <= 1.0
    assert 0 <= own["pointing_frames"] <= 29 and 0.0 <= own["box_iou_mean"] <= 1.0
    assert van["role"] == "in view" and "inside_box_mean" not in van
    assert "prior_conf_p50" not in van  # a model without the grounding prior
    image = cv2.imread(str(png))
    assert image.shape == (2 * 272, 2 * 640, 3)  # two phrases x two frames, unscaled
    with pytest.raises(SystemExit):  # a synthetic clip records no referent's box
        main(["--checkpoint", str(tiny_minilm_checkpoint), "--clip", "moving"])
    assert main(["--checkpoint", str(tiny_minilm_checkpoint), "--columns", "99"]) == 2
    assert "--columns must be frame numbers" in capsys.readouterr().err


def test_the_people_clip_with_instances_marks_the_walker_in_red(tiny_minilm_checkpoint, tmp_path):
    """The tiny network alone knows nothing of real people; with the instances as the stream has
    them, the colour word picks the walker in red on the clip's frames (her track's boxes). At
    128x224 the flow (at the network's size) still sees her walk, so her box keeps up."""
    out = tmp_path / "p.json"
    code = main(["--checkpoint", str(tiny_minilm_checkpoint), "--backend", "torch",
                 "--size", "128x224", "--phrase", "the dog", "--columns", "0",
                 "--json", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    own, dog = report["phrases"]
    assert report["instances"] and report["clip"]["name"] == "people"
    assert (
        own["phrase"] == "the person in red" and own["pointing_frames"] == report["clip"]["frames"]
    )
    assert own["inside_box_mean"] >= 0.8
    assert dog["role"] == "not in view"


def test_a_prior_model_reports_its_confidence(tiny_prior_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "d.json"
    code = main(["--checkpoint", str(tiny_prior_checkpoint), "--backend", "torch",
                 "--size", "64x96", "--phrase", "the boat", "--columns", "0",
                 "--json", str(out), "--no-progress"])  # fmt: skip
    assert code == 0 and "min_prior" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert all(0.0 <= row["prior_conf_p50"] <= 1.0 for row in report["phrases"])
    assert 0.0 < report["min_prior"] < 1.0
