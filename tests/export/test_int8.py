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
from export.int8 import QUANT_OPS, float_nodes, scope_nodes

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


def test_scope_nodes_picks_a_module_and_its_submodules_not_its_prefix_siblings(tiny_export):
    def conv(name, src, dst, scopes):
        node = helper.make_node("Conv", [src, f"{name}_w"], [dst], name=name)
        prop = node.metadata_props.add()
        prop.key, prop.value = "pkg.torch.onnx.name_scopes", repr(["", *scopes])
        return node

    nodes = [
        conv("stem", "image", "a", ["model.backbone", "model.backbone._conv_stem"]),
        conv("head", "a", "b", ["model.prior", "model.prior.net", "model.prior.net._conv_head"]),
        conv("into", "b", "c", ["model.prior_in", "model.prior_in.3"]),
        helper.make_node("Relu", ["c"], ["d"], name="act"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph)
    assert scope_nodes(model, ["model.prior"]) == ["head"]
    assert scope_nodes(model, ["model.prior.net", "model.prior_in"]) == ["head", "into"]
    assert scope_nodes(model, ["model.prior", "model.prior"]) == ["head"]  # no repeats
    with pytest.raises(ValueError, match=r"inside model\.gates; .*model\.backbone, model\.prior"):
        scope_nodes(model, ["model.gates"])
    # the real exporter records the scopes: the tiny export's backbone convolutions are found
    exported = onnx.load(str(tiny_export / "frame_net.onnx"), load_external_data=False)
    backbone = scope_nodes(exported, ["model.backbone"])
    by_name = {n.name: n for n in exported.graph.node}
    assert len(backbone) > 5 and all(by_name[n].op_type == "Conv" for n in backbone)


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
    from export.engines import create_engine

    fp32 = create_engine("onnx", int8_export, input_size=SIZE)
    int8 = create_engine(
        "onnx", int8_export, precision="int8", input_size=SIZE, int8_below_target=True
    )  # measured, whatever its recorded parity
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


def _with_parity(folder: Path, meets: bool) -> Path:
    """A copy of the INT8 export whose recorded parity does (not) meet the bar."""
    import dataclasses

    from engine.manifest import write_manifest

    manifest = read_manifest(folder)
    report = {**manifest.checks["int8"], "meets_target": meets}
    report["real"] = {**report["real"], "mask_iou_mean": 0.99 if meets else 0.547}
    write_manifest(
        folder, dataclasses.replace(manifest, checks={**manifest.checks, "int8": report})
    )
    return folder


def test_an_int8_graph_under_the_bar_is_refused_everywhere(int8_export, tmp_path, tiny_checkpoint):
    """The CLI, the engine factory and the page's loader refuse it with one line that says why."""
    from engine.loading import Int8RefusedError
    from export.engines import create_engine

    below = _with_parity(shutil.copytree(int8_export, tmp_path / "below"), meets=False)
    with pytest.raises(Int8RefusedError, match=r"INT8 refused: .*IoU 0\.547 on real frames.*"
                       r"under the 0\.97 bar.*use --precision fp32"):  # fmt: skip
        create_engine("onnx", below, precision="int8", input_size=SIZE)
    create_engine("onnx", below, input_size=SIZE).close()  # its FP32 graph still runs
    r = subprocess.run([sys.executable, "run_stream.py", "--backend", "onnx", "--checkpoint",
                        str(below), "--precision", "int8", "--size", "64x64", "--no-display",
                        "--max-frames", "2", "--out-dir", str(tmp_path / "run")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and "INT8 refused" in lines[-1] and "--precision fp32" in lines[-1]
    above = _with_parity(shutil.copytree(int8_export, tmp_path / "above"), meets=True)
    engine = create_engine("onnx", above, precision="int8", input_size=SIZE)
    assert engine.precision == "int8"
    engine.close()


def test_int8_errors_are_clear(tiny_export, tiny_checkpoint):
    from export.engines import create_engine

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
    assert r.returncode == 2 and "argument --int8-float-ends: must be D,T" in r.stderr
    scopes = ["--int8-float-scopes", "model.backbone,model.nothing"]
    r = subprocess.run([sys.executable, "-m", "export", "--out", str(tiny_export), "--int8",
                        "--int8-size", "64x64", *scopes], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "no quantisable layer inside model.nothing" in r.stderr
    assert "int8" not in read_manifest(tiny_export).precisions  # nothing changed


def test_the_shipped_calibration_pairs_come_from_the_training_partition():
    from export.calibration import CALIBRATION_INDEX, demo_pairs, synthetic_pairs
    from training.synthetic.spec import PARTITIONS

    index = json.loads(CALIBRATION_INDEX.read_text())
    lo, hi = PARTITIONS["train"]
    assert all(lo <= row["seed"] < hi for row in index["clips"])
    pairs = synthetic_pairs()
    assert len(pairs) == sum(len(row["pairs"]) for row in index["clips"]) >= 24
    assert {p[2] for p in pairs} == {row["phrase"] for row in index["clips"]}
    prev, frame, _ = pairs[0]
    assert prev.shape == frame.shape == (240, 320, 3) and not np.array_equal(prev, frame)
    assert len(synthetic_pairs(clips=3)) == 6
    held_out = demo_pairs(per_clip=4)
    assert len(held_out) == 8  # both demo clips, inside their first pass
    for prev, frame, _ in held_out:  # consecutive frames, never the loop's jump back
        assert np.abs(prev.astype(int) - frame.astype(int)).mean() < 20
    calib = {p[1].tobytes() for p in pairs}
    assert not any(p[1].tobytes() in calib for p in held_out)


def test_a_broken_calibration_index_is_an_export_error(tmp_path):
    from engine.manifest import ExportError
    from export.calibration import CALIBRATION_INDEX, synthetic_pairs

    bad = tmp_path / "clips.json"
    bad.write_text("{not json")
    with pytest.raises(ExportError, match="INT8 calibration clips"):
        synthetic_pairs(bad)
    index = json.loads(CALIBRATION_INDEX.read_text())
    index["frames"] += 1
    bad.write_text(json.dumps(index))
    shutil.copy(CALIBRATION_INDEX.parent / index["file"], tmp_path / index["file"])
    with pytest.raises(ExportError, match="frames"):
        synthetic_pairs(bad)


def test_sensitive_nodes_and_the_sweep_file_checks(tiny_export, tmp_path):
    from export.int8 import SWEEP_FORMAT, read_sweep, sensitive_nodes
    from models.files import sha256_file

    def row(node, synthetic, real):
        return {"node": node, "synthetic": {"mask_iou_mean": synthetic},
                "real": {"mask_iou_mean": real}}  # fmt: skip

    sha = sha256_file(tiny_export / "frame_net.onnx")
    sweep = {"format": SWEEP_FORMAT, "frame_net_sha256": sha, "size": [64, 64],
             "rows": [row("a", 0.99, 0.90), row("b", 1.0, 1.0), row("c", 0.95, 0.999)]}  # fmt: skip
    assert sensitive_nodes(sweep, 0.98) == ["a", "c"]
    assert sensitive_nodes(sweep, 0.9) == []
    path = tmp_path / "sweep.json"
    assert read_sweep(path, tiny_export) is None  # missing
    path.write_text(json.dumps(sweep))
    assert read_sweep(path, tiny_export)["rows"] == sweep["rows"]
    path.write_text(json.dumps({**sweep, "frame_net_sha256": "0" * 64}))
    assert read_sweep(path, tiny_export) is None  # measured on another graph
    path.write_text(json.dumps(sweep["rows"]))  # the old list format
    assert read_sweep(path, tiny_export) is None


def test_keep_below_keeps_the_sweeps_sensitive_layers_float(tiny_export, tmp_path):
    from export.calibration import default_calibration_videos
    from export.int8 import sensitive_nodes

    if not default_calibration_videos():
        pytest.skip("the sweep's real frames need opencv-doc (scripts/setup.sh installs it)")
    folder = tmp_path / "export"
    shutil.copytree(tiny_export, folder)
    sweep_file = tmp_path / "sweep.json"
    cmd = [sys.executable, "-m", "export", "--out", str(folder), "--int8", "--int8-size", "64x64",
           "--int8-float-scopes", "model.decoder", "--int8-sweep-layers", "8",
           "--int8-keep-below", "0.999", "--int8-sensitivity", str(sweep_file)]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    sweep = json.loads(sweep_file.read_text())
    assert sweep["size"] == [64, 64] and len(sweep["rows"]) == 8  # --int8-sweep-layers
    below = sensitive_nodes(sweep, 0.999)
    report = read_manifest(folder).checks["int8"]
    assert report["keep_below"] == 0.999 and set(below) <= set(report["kept_float"])
    decoder = scope_nodes(onnx.load(str(folder / "frame_net.onnx")), ["model.decoder"])
    assert report["float_scopes"] == ["model.decoder"] and set(decoder) <= set(report["kept_float"])
    assert "layers of model.decoder stay float" in r.stdout
    assert "pooled" in r.stdout and report["real"]["mask_iou_pooled"] >= 0.0
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "sensitivity sweep read from" in r.stdout  # not measured again
    bad = subprocess.run(cmd[:-4] + ["--int8-keep-below", "1.5"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "argument --int8-keep-below: must be in (0, 1]" in bad.stderr
