"""The README's main job in miniature: the stream on the demo source with the shipped model.

Runs ``run_stream.py`` as a user would (a subprocess, default engine = ONNX Runtime on CPU) with an
empty export cache, so the first-use ONNX export of the shipped checkpoint runs too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "weights" / "hinet_lite0"


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
    assert summary["phrase"]  # the demo clip's own referring expression
    for stage in ("flow", "inference", "end_to_end"):
        assert summary["stages_ms"][stage]["p50"] > 0

    cap = cv2.VideoCapture(str(out))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert frames == 12

    exports = list((tmp_path / "cache" / "exports").glob("*/manifest.json"))
    assert len(exports) == 1, "the shipped checkpoint was not exported to the (empty) cache"
    manifest = json.loads(exports[0].read_text())
    assert manifest["checks"]["fp32"]["passed"] is True
