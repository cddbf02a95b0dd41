"""The model-cost benchmark returns consistent data (timings are never asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks.model_cost import format_table, main, model_cost, parse_sizes
from models.hinet import build_model


def test_model_cost_returns_data(tmp_path):
    result = model_cost("hinet_tiny", sizes=((64, 64), (64, 128)), repeats=2)
    p = result["params"]
    assert p["total"] == p["backbone"] + p["rest"]
    assert p["total"] == sum(x.numel() for x in build_model("hinet_tiny").parameters())
    small, big = result["rows"]
    # Convolution FLOPs scale with the pixel count (attention over 20 tokens too).
    assert big["gflops"] == pytest.approx(2 * small["gflops"], rel=0.02)
    assert set(small["gflops_by_part"]) >= {"EfficientNetLite", "Interaction", "Decoder"}
    assert sum(small["gflops_by_part"].values()) == pytest.approx(small["gflops"], rel=1e-6)
    assert 0 < small["p50_ms"] <= small["p95_ms"]
    assert result["device"] and result["threads"] >= 1
    assert "hinet_tiny" in format_table(result)
    json.dumps(result)


def test_model_cost_cli_and_errors(tmp_path):
    with pytest.raises(ValueError, match="hinet_lite0"):
        model_cost("nope")
    with pytest.raises(ValueError, match="repeats"):
        model_cost("hinet_tiny", repeats=0)
    with pytest.raises(ValueError, match="HxW"):
        parse_sizes("320by320")
    assert parse_sizes("64x96,32x32") == ((64, 96), (32, 32))
    out = tmp_path / "cost.json"
    args = ["--preset", "hinet_tiny", "--repeats", "1", "--sizes", "64x96", "--json", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert data["preset"] == "hinet_tiny"
    assert [(r["height"], r["width"]) for r in data["rows"]] == [(64, 96)]
