"""The INT8 benchmark on the tiny model: FP32, its INT8 graph and a variant export, timed in the
same alternating rounds, written as JSON with the parity of each INT8 graph."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _int8(src: Path, dst: Path, *extra: str) -> Path:
    shutil.copytree(src, dst)
    r = subprocess.run([sys.executable, "-m", "export", "--out", str(dst), "--int8",
                        "--int8-size", "64x64", *extra], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return dst


def test_the_int8_benchmark_times_variants_side_by_side(tiny_export, tmp_path):
    main = _int8(tiny_export, tmp_path / "main")
    wide = _int8(tiny_export, tmp_path / "wide", "--int8-float-ends", "4,2")
    out = tmp_path / "int8.json"
    cmd = [sys.executable, "-m", "benchmarks.int8", "--checkpoint", str(main), "--size", "64x64",
           "--repeats", "10", "--threads", "1", "--json", str(out)]  # fmt: skip
    r = subprocess.run(cmd + ["--variant", f"ends4-2={wide}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["resolution"] == [64, 64]
    rows = {row["variant"]: row for row in data["rows"]}
    assert list(rows) == ["fp32", "int8", "ends4-2"]
    assert rows["fp32"]["speedup_p50"] == 1.0 and data["speedup_p50"] == rows["int8"]["speedup_p50"]
    for row in rows.values():
        assert row["p50_ms"] > 0 and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert rows["ends4-2"]["kept_float"] > rows["int8"]["kept_float"]  # the variant's own graph
    assert rows["ends4-2"]["parity"]["float_ends"] == [4, 2]
    assert "QuantizeLinear" in rows["int8"]["op_share"] and "ends4-2" in r.stdout
    bad = subprocess.run(cmd + ["--variant", "nothing"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "--variant must be NAME=DIR" in bad.stderr
