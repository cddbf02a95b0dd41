"""The README's main job in miniature: the stream on the demo source with the shipped model.

Runs ``run_stream.py`` as a user would (a subprocess, default engine = ONNX Runtime on CPU) with an
empty export cache, so the first-use ONNX export of the shipped checkpoint runs too. The demo is
real pedestrian footage (an excerpt of opencv-doc's ``vtest.avi``, several people) with the phrase
"the person in red"; the test reads the per-frame results file and checks that every mask is on
the walker in the red jacket (the track recorded with the clip), not on the others, and that the
instance the words chose says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.demo import demo_clip
from engine.instances import DEFAULT_EVERY
from engine.rle import rle_decode
from models.checkpoint import DEFAULT_CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = DEFAULT_CHECKPOINT


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="no shipped model")
def test_main_job_on_demo_with_shipped_model(tmp_path):
    out, stats = tmp_path / "overlay.mp4", tmp_path / "stats.json"
    env = {**os.environ, "HINET_STREAM_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_stream.py"),
            "--source",
            "demo",
            "--no-display",
            "--max-frames",
            "12",
            "--output",
            str(out),
            "--stats-json",
            str(stats),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = json.loads(stats.read_text())
    assert summary["backend"] == "onnx" and summary["frames"] == 12 and summary["written"] == 12
    clip = demo_clip()
    assert clip.kind == "real" and summary["phrase"] == clip.phrase == "the person in red"
    for stage in ("flow", "inference", "end_to_end"):
        assert summary["stages_ms"][stage]["p50"] > 0
    detector = summary["detector"]  # instance evidence is on by default, in its own thread
    assert detector["background"] and detector["every"] == DEFAULT_EVERY
    assert detector["runs"] >= 2 and detector["p95_ms"] >= detector["p50_ms"] > 0
    assert "detector: " in proc.stdout

    cap = cv2.VideoCapture(str(out))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert frames == 12

    exports = list((tmp_path / "cache" / "exports").glob("*/manifest.json"))
    assert len(exports) == 1, "the shipped checkpoint was not exported to the (empty) cache"
    manifest = json.loads(exports[0].read_text())
    assert manifest["checks"]["fp32"]["passed"] is True

    # The method works, not only runs: on every frame the mask lies on the walker in red, whom
    # the colour word chose among the people in view.
    rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["found"] for r in rows), [r["score"] for r in rows]
    for i, row in enumerate(rows):
        x0, y0, x1, y1 = np.array(clip.box_at(i)) + [-10, -10, 10, 10]
        mask = rle_decode(row["mask"]).astype(bool)
        ys, xs = np.nonzero(mask)
        assert x0 <= np.median(xs) < x1 and y0 <= np.median(ys) < y1, (i, clip.box_at(i))
        assert mask[y0:y1, x0:x1].sum() >= 0.8 * mask.sum()
        people = [c for c in row["instances"] if c["class"] == "person"]
        chosen = [c for c in people if c["chosen"]]
        assert len(people) >= 3 and len(chosen) == 1 and chosen[0]["parts"]["red"] == 1.0
