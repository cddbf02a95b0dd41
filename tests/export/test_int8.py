"""INT8 (QDQ) frame_net: which layers stay float, the export step, the manifest, the engines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engine.manifest import read_manifest
from export.check import mask_iou, real_frame_inputs
from export.int8 import QUANT_OPS, float_nodes

ROOT = Path(__file__).resolve().parents[2]
SIZE = (64, 64)


def test_float_nodes_keeps_the_first_two_layers_on_every_input_path():
    def conv(name, src, dst):
        return helper.make_node("Conv", [src, f"{name}_w"], [dst], name=name)

    nodes = [
        conv("stem", "image", "a"), helper.make_node("Relu", ["a"], ["b"], name="act"),
        conv("dw1", "b", "c"), conv("pw1", "c", "d"), conv("pw2", "d", "e"),
        helper.make_node("MatMul", ["words", "wt"], ["f"], name="proj"),
        helper.make_node("MatMul", ["f", "wt2"], ["g"], name="proj2"),
        helper.make_node("MatMul", ["g", "wt3"], ["h"], name="proj3"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("image", "words")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("e", "h")],
    )  # fmt: skip
    model = helper.make_model(graph)
    assert float_nodes(model) == ["stem", "dw1", "proj", "proj2"]
    assert float_nodes(model, depth=1) == ["stem", "proj"]
    # tail: the last quantisable layers before an output (pw2 feeds "e", proj3 feeds "h")
    assert float_nodes(model, depth=1, tail=1) == ["stem", "pw2", "proj", "proj3"]
    assert float_nodes(model, depth=0, tail=2) == ["pw1", "pw2", "proj2", "proj3"]
    assert set(QUANT_OPS) == {"Conv", "MatMul", "Gemm"}


@pytest.fixture(scope="module")
def int8_export(tiny_export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8") / "export"
    shutil.copytree(tiny_export, folder)
    r = subprocess.run([sys.executable, "-m", "export", "--out", str(folder), "--int8",
                        "--int8-size", "64x64"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "int8 parity: mask IoU vs fp32" in r.stdout
    return folder


def test_the_int8_step_adds_a_qdq_graph_and_its_parity_report(int8_export):
    manifest = read_manifest(int8_export)  # hashes verified: the new file is recorded
    assert manifest.precisions[-1] == "int8"
    report = manifest.checks["int8"]
    assert report["synthetic"]["frames"] > 0 and report["real"]["frames"] > 0
    assert 0.0 <= report["synthetic"]["mask_iou_mean"] <= 1.0
    assert isinstance(report["meets_target"], bool) and report["kept_float"]
    ops = {n.op_type for n in onnx.load(str(int8_export / "frame_net.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "Softmax" in ops or "Sigmoid" in ops  # float ops stay float
    # what a newcomer reads: the same report as JSON in the manifest
    assert "int8" in json.loads((int8_export / "manifest.json").read_text())["checks"]


def test_the_onnx_engine_runs_int8_close_to_fp32(int8_export):
    from engine.backends import create_engine

    fp32 = create_engine("onnx", int8_export, input_size=SIZE)
    int8 = create_engine("onnx", int8_export, precision="int8", input_size=SIZE)
    assert int8.precision == "int8"
    a, b = fp32.encode_text("the red circle"), int8.encode_text("the red circle")
    np.testing.assert_array_equal(a.words, b.words)  # the text encoder stays fp32
    for image, flow in real_frame_inputs(fp32.config, size=SIZE, count=2):
        got, want = int8.segment(image, flow, b), fp32.segment(image, flow, a)
        assert got.shape == want.shape and np.isfinite(got).all()
        assert not np.array_equal(got, want)  # it is another graph
        assert mask_iou(got > 0, want > 0) > 0.5
    fp32.close()
    int8.close()


def test_int8_errors_are_clear(tiny_export, tiny_checkpoint):
    from engine.backends import create_engine

    with pytest.raises(
        ValueError, match="has no int8 graphs .*re-export with python -m export --int8"
    ):
        create_engine("onnx", tiny_export, precision="int8", input_size=SIZE)
    with pytest.raises(ValueError, match="use the onnx backend"):
        create_engine("torch", tiny_checkpoint, precision="int8", input_size=SIZE)
    r = subprocess.run([sys.executable, "-m", "export", "--out", str(tiny_export), "--int8",
                        "--calibration-video", "/nonexistent.avi"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "--calibration-video not found" in r.stderr
    r = subprocess.run([sys.executable, "-m", "export", "--out", str(tiny_export), "--int8",
                        "--int8-float-ends", "two"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 2 and "--int8-float-ends must be D,T" in r.stderr
    assert "int8" not in read_manifest(tiny_export).precisions  # nothing changed
