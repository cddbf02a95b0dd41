"""The GPU suite's reduced CPU mode: the same code path a GPU run takes, minus the CUDA rows."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu_suite


@pytest.mark.timeout(300)
def test_quick_cpu_mode_writes_the_report_and_the_plot(tiny_minilm_checkpoint, tmp_path, capsys):
    out = tmp_path / "suite.json"
    code = gpu_suite.main(["--checkpoint", str(tiny_minilm_checkpoint), "--device", "cpu",
                           "--quick", "--json", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["device_name"].startswith("cpu") and "not measured on GPU" in report["note"]
    torch_rows = [r for r in report["rows"] if r["backend"] == "torch"]
    assert [(r["variant"], r["batch"]) for r in torch_rows] == [
        ("eager fp32", 1),
        ("eager fp32", 2),
    ]
    for r in report["rows"]:
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] and r["fps"] > 0
    assert report["rows"][-1]["backend"] == "onnxruntime"
    assert sum("(CUDA only)" in s for s in report["skipped"]) == 8  # 4 CUDA variants x 2 batches
    stream = report["stream"]
    assert stream["frames"] == 12 and stream["capture_to_overlay_p95_ms"] >= stream[
        "capture_to_overlay_p50_ms"] > 0  # fmt: skip
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "stream (cpu, fp32): capture -> overlay p50" in capsys.readouterr().out


def test_a_spent_budget_skips_rows_and_says_so(tiny_minilm_checkpoint, tmp_path):
    out = tmp_path / "suite.json"
    assert gpu_suite.main(["--checkpoint", str(tiny_minilm_checkpoint), "--device", "cpu",
                           "--quick", "--budget-s", "0", "--json", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["rows"] == [] and report["stream"] is None
    assert any("budget spent" in s for s in report["skipped"])


def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    with pytest.raises(SystemExit) as info:
        gpu_suite.main(["--device", "cuda"])
    assert info.value.code == 2 and "torch sees no CUDA GPU" in capsys.readouterr().err
