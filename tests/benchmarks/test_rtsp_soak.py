"""The RTSP soak on a short run: the real GStreamer server restarted once, the tiny model."""

from __future__ import annotations

import json

import pytest

from benchmarks import rtsp_soak

pytestmark = pytest.mark.rtsp


@pytest.mark.timeout(300)
def test_a_short_soak_survives_a_restart_and_reports_it(tiny_minilm_checkpoint, tmp_path):
    missing = rtsp_soak.gst_rtsp_missing()
    if missing:
        pytest.skip(missing)
    out = tmp_path / "soak.json"
    record = rtsp_soak.main([
        "--backend", "onnx", "--checkpoint", str(tiny_minilm_checkpoint), "--size", "64x64",
        "--minutes", "0.5", "--restarts", "1", "--down-s", "1", "--stream-size", "320x240",
        "--no-progress", "--json", str(out),
    ])  # fmt: skip
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(record))
    assert data["crashed"] is None and data["frames"] > 50 and data["reconnects"] >= 1
    (restart,) = data["restarts"]
    assert restart["back_s"] >= restart["down_s"] + 1.0
    assert 0 < restart["first_frame_after_back_s"] < 20  # it came back, and it was measured
    assert restart["stream_gap_s"] >= 1.0  # at least the time the server was down
    assert len(data["rss_mb"]) >= 10 and data["rss_growth_mb"] is not None
    assert data["detector"]["runs"] >= 1
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
