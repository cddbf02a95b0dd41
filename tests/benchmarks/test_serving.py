"""The serving benchmark against a real tritonserver (nvidia-pytriton's, in ``.venv-triton``)."""

from __future__ import annotations

import json

import pytest

from benchmarks import serving
from benchmarks.triton_local import TritonEnvMissingError, server_env

pytest.importorskip("tritonclient.grpc")


def test_histogram_delta_counts_only_this_runs_executions():
    stats = {"model_stats": [{"batch_stats": [
        {"batch_size": "1", "compute_infer": {"count": "7"}},
        {"batch_size": "2", "compute_infer": {"count": "3"}},
    ]}]}  # fmt: skip
    hist = serving.batch_histogram(stats)
    assert hist == {1: 7, 2: 3}
    assert serving.histogram_delta({1: 5, 2: 3}, {**hist, 4: 1}) == {1: 2, 4: 1}


def test_settled_histogram_waits_for_an_execution_recorded_after_its_answer():
    def stats(count: int) -> dict:
        return {
            "model_stats": [{"batch_stats": [{"batch_size": 1, "compute_infer": {"count": count}}]}]
        }

    readings = iter([stats(2), stats(3)])  # the last warm-up request lands in the statistics late
    last = stats(3)
    hist = serving.settled_histogram(lambda: next(readings, last), poll_s=0.001)
    assert hist == {1: 3}


@pytest.mark.timeout(300)
def test_two_stream_counts_both_modes_json_and_png(tiny_export, tmp_path, capsys):
    try:
        server_env()
    except TritonEnvMissingError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "serving.json"
    code = serving.main(["--checkpoint", str(tiny_export), "--streams", "1,2", "--seconds", "1.5",
                         "--pace", "12", "--size", "128x160", "--json", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["note"] == "not measured on GPU" and report["resolution"] == [128, 160]
    rows = {(r["mode"], r["streams"]): r for r in report["rows"]}
    assert set(rows) == {("triton", 1), ("triton", 2), ("local", 1), ("local", 2)}
    for (mode, n), r in rows.items():
        assert r["frames"] > 0 and not r["failed"]
        assert 0 < r["capture_to_overlay_p50_ms"] <= r["capture_to_overlay_p95_ms"]
        assert r["fps_total"] == pytest.approx(n * r["fps_per_stream_mean"])
        if mode == "triton":  # every frame this run sent was executed by the server once
            assert sum(int(b) * c for b, c in r["batch_histogram"].items()) == r["frames"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mean batch" in capsys.readouterr().out
