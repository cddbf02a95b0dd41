"""The stream benchmark on the tiny model: every source and mode, with the stream's default
session (instance evidence in its own thread), the JSON a reader gets and the histogram."""

from __future__ import annotations

import json

import pytest

from benchmarks import stream_latency


@pytest.mark.timeout(600)
def test_every_source_and_mode_with_the_default_session(tiny_minilm_checkpoint, tmp_path):
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    stream_latency.main([
        "--backend", "onnx", "--checkpoint", str(tiny_minilm_checkpoint), "--size", "64x64",
        "--frames", "12", "--rounds", "1", "--threads", "1", "--live-fps", "60",
        "--json", str(out_json), "--png", str(out_png),
    ])  # fmt: skip
    data = json.loads(out_json.read_text())
    assert data["instances"] is True and out_png.stat().st_size > 0
    runs = data["runs"]
    assert {(r["source"], r["mode"]) for r in runs} == {
        (s, m) for s in ("demo", "video", "live") for m in ("sequential", "pipelined")
    }
    for r in runs:
        # a paced live source drops what the stream is too slow for (the newest frame wins)
        assert r["frames"] == 12 if r["source"] != "live" else 0 < r["frames"] <= 12, r
        assert r["throughput_fps"] > 0
        assert r["detector"]["runs"] >= 1 and r["detector"]["background"] is True
        e2e = r["stages_ms"]["end_to_end"]
        assert 0 < e2e["p50"] <= e2e["p95"] <= e2e["p99"]
    assert "people" in data["sources"]["demo"]
