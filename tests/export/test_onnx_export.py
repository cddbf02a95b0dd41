"""ONNX export of a real tiny checkpoint: folder contents, graphs, dynamic shapes, FP16, checks."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tiny_model import MAX_SIDE, MIN_SIDE

from engine.base import FRAME_INPUTS, FRAME_OUTPUTS, TEXT_INPUTS, TEXT_OUTPUTS
from engine.manifest import (
    ExportError,
    checkpoint_sha256,
    read_manifest,
    verify_files,
)
from export.__main__ import main as cli_main
from export.check import TOLERANCES, check_export, compare_logits, mask_iou, real_frame_inputs
from export.fp16 import FP32_OPS
from export.onnx_export import export_checkpoint
from models.checkpoint import load_checkpoint, sha256_file
from models.hinet import build_model


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_folder_has_every_file_and_a_complete_manifest(exported):
    ckpt, out = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "config.json",
        "frame_net.fp16.onnx",
        "frame_net.onnx",
        "manifest.json",
        "text_encoder.fp16.onnx",
        "text_encoder.onnx",
        "tokenizer.model",
    ]
    m = read_manifest(out)
    assert m.opset >= 18
    assert m.precisions == ("fp32", "fp16")
    assert (m.min_side, m.max_side) == (MIN_SIDE, MAX_SIDE)
    assert {"torch", "onnx", "onnxruntime", "onnxscript"} <= set(m.versions)
    assert m.versions["torch"] == torch.__version__
    assert m.source_checkpoint_sha256 == checkpoint_sha256(ckpt)
    assert set(m.files) == set(names) - {"manifest.json"}
    for name, digest in m.files.items():
        assert sha256_file(out / name) == digest
    verify_files(out, m)
    # I/O names are exactly the engine interface's, with dynamic batch / height / width.
    frame, text = m.io["frame_net"], m.io["text_encoder"]
    assert set(frame["inputs"]) == set(FRAME_INPUTS) and set(frame["outputs"]) == set(FRAME_OUTPUTS)
    assert set(text["inputs"]) == set(TEXT_INPUTS) and set(text["outputs"]) == set(TEXT_OUTPUTS)
    assert frame["inputs"]["image"]["shape"] == ["batch", 3, "height", "width"]
    assert frame["outputs"]["logits"]["shape"] == ["batch", 1, "height", "width"]
    assert text["inputs"]["token_ids"] == {"shape": ["batch", 20], "dtype": "int64"}
    # The checks ran and are recorded with their numbers.
    for precision in ("fp32", "fp16"):
        c = m.checks[precision]
        atol, rtol, min_iou, _ = TOLERANCES[precision]
        assert c["passed"] is True
        for kind in ("random", "real"):
            assert c[kind]["max_abs"] <= atol + rtol * c[kind]["ref_max_abs"]
            assert c[kind]["iou"] >= min_iou
    # The config and tokenizer are the checkpoint's, byte for byte.
    assert (out / "config.json").read_bytes() == (ckpt / "config.json").read_bytes()
    assert (out / "tokenizer.model").read_bytes() == (ckpt / "tokenizer.model").read_bytes()


@pytest.mark.parametrize("name", ["text_encoder.onnx", "frame_net.onnx", "frame_net.fp16.onnx"])
def test_graphs_pass_the_checker_with_opset_18_and_single_file(exported, name):
    _, out = exported
    onnx.checker.check_model(str(out / name), full_check=True)
    proto = onnx.load(str(out / name))
    opsets = {o.domain: o.version for o in proto.opset_import}
    assert opsets[""] >= 18
    assert not (out / f"{name}.data").exists()  # weights inside the file
    graph = "text_encoder" if name.startswith("text") else "frame_net"
    inputs, outputs = (
        (TEXT_INPUTS, TEXT_OUTPUTS) if graph == "text_encoder" else (FRAME_INPUTS, FRAME_OUTPUTS)
    )
    assert tuple(i.name for i in proto.graph.input) == inputs
    assert tuple(o.name for o in proto.graph.output) == outputs


@pytest.mark.parametrize(("batch", "h", "w"), [(1, 64, 64), (3, 96, 256), (2, 256, 160)])
def test_frame_net_accepts_dynamic_batch_and_size(exported, batch, h, w):
    ckpt, out = exported
    model, _, _ = load_checkpoint(ckpt)
    rng = np.random.default_rng(batch)
    c, n = model.config.text.width, model.config.text.max_tokens
    feeds = {
        "image": rng.standard_normal((batch, 3, h, w), dtype=np.float32),
        "flow": rng.standard_normal((batch, 2, h, w), dtype=np.float32),
        "words": rng.standard_normal((batch, n, c), dtype=np.float32),
        "words_mask": (np.arange(n)[None] < 4).repeat(batch, 0).astype(np.float32),
        "sentence": rng.standard_normal((batch, c), dtype=np.float32),
    }
    (got,) = _session(out / "frame_net.onnx").run(None, feeds)
    with torch.no_grad():
        ref = model.forward_frame(*[torch.from_numpy(feeds[k]) for k in FRAME_INPUTS]).numpy()
    assert got.shape == (batch, 1, h, w)
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)


def test_fp16_graph_is_fp16_inside_with_fp32_islands_and_fp32_io(exported):
    _, out = exported
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(out / "frame_net.fp16.onnx")))
    g = proto.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    fp16_weights = [t for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    fp32_weights = [t for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT]

    def size(t):
        return int(np.prod(list(t.dims)))

    assert sum(map(size, fp16_weights)) > 10 * sum(map(size, fp32_weights))
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert convs and all(types[n.input[0]] == onnx.TensorProto.FLOAT16 for n in convs)
    islands = [n for n in g.node if n.op_type in FP32_OPS]
    assert any(n.op_type == "Softmax" for n in islands)
    for n in islands:
        for name in n.input:
            if name and types.get(name) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                assert types[name] == onnx.TensorProto.FLOAT, f"{n.op_type} input {name} not fp32"
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in g.input)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in g.output)
    text = onnx.load(str(out / "text_encoder.fp16.onnx")).graph
    assert any(n.op_type == "LayerNormalization" for n in text.node)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnx_matches_torch_on_real_video_frames(exported, precision):
    ckpt, out = exported
    model, tokenizer, _ = load_checkpoint(ckpt)
    suffix = "" if precision == "fp32" else ".fp16"
    text_sess = _session(out / f"text_encoder{suffix}.onnx")
    frame_sess = _session(out / f"frame_net{suffix}.onnx")
    atol, rtol, min_iou, text_atol = TOLERANCES[precision]
    ids, mask = tokenizer.encode(
        tokenizer.normalize("the person riding a bike"), max_tokens=20, max_chars=200
    )
    with torch.no_grad():
        ref_text = [
            t.numpy() for t in model.encode_text(torch.from_numpy(ids), torch.from_numpy(mask))
        ]
    got_text = text_sess.run(list(TEXT_OUTPUTS), {"token_ids": ids, "token_mask": mask})
    for r, g in zip(ref_text, got_text):
        np.testing.assert_allclose(g, r, atol=text_atol, rtol=0)
    for image, flow in real_frame_inputs(model.config, size=(160, 256), count=2, start=100):
        feeds = {"image": image, "flow": flow, **dict(zip(TEXT_OUTPUTS, ref_text))}
        assert np.abs(flow).max() > 0  # real motion in the street clip
        with torch.no_grad():
            ref = model.forward_frame(*[torch.from_numpy(feeds[k]) for k in FRAME_INPUTS]).numpy()
        (got,) = frame_sess.run(None, feeds)
        stats = compare_logits(ref, got)
        assert stats["max_abs"] <= atol + rtol * stats["ref_max_abs"], stats
        assert stats["iou"] >= min_iou, stats


def test_check_export_fails_for_a_different_model(exported):
    """The parity check can fail: another model's weights against these graphs."""
    _, out = exported
    torch.manual_seed(123)
    other = build_model("hinet_tiny", pretrained_backbone=False).eval()
    _, tokenizer, _ = load_checkpoint(exported[0])
    with pytest.raises(ExportError, match="differs from torch"):
        check_export(
            other,
            tokenizer,
            text_path=out / "text_encoder.onnx",
            frame_path=out / "frame_net.onnx",
            precision="fp32",
            min_side=MIN_SIDE,
            max_side=MAX_SIDE,
        )


def test_compare_logits_and_iou():
    a = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    assert mask_iou(a > 0, a > 0) == 1.0
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    b = a.copy()
    b[0, 0] = 0.5
    s = compare_logits(a, b)
    assert s["max_abs"] == pytest.approx(1.5)
    assert s["mean_abs"] == pytest.approx(1.5 / 4)
    assert s["iou"] == pytest.approx(2 / 3)
    with pytest.raises(ExportError, match="shape"):
        compare_logits(a, a[:1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_side": 50}, "multiples of 32"),
        ({"min_side": 512, "max_side": 256}, "min <= max"),
        ({"opset": 17}, "opset must be >= 18"),
        ({"max_batch": 0}, "max_batch"),
    ],
)
def test_export_rejects_bad_arguments(exported, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_checkpoint(exported[0], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_reports_errors_with_exit_code(exported, tmp_path, capsys):
    code = cli_main(
        ["--checkpoint", str(exported[0]), "--out", str(tmp_path / "o"), "--min-size", "50"]
    )
    assert code == 2
    assert "multiples of 32" in capsys.readouterr().err
    code = cli_main(["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_manifest_is_plain_json(exported):
    data = json.loads((exported[1] / "manifest.json").read_text())
    assert data["format"] == "hinet-stream-export"
    assert data["opset"] >= 18


@pytest.mark.timeout(600)
def test_minilm_text_encoder_exports_with_parity(tiny_minilm_checkpoint, tmp_path):
    """The pretrained text side in text_encoder.onnx: FP32 and FP16 pass the parity checks
    (torch vs ONNX Runtime on random and real inputs), and a plain English sentence encodes."""
    from export.engines import create_engine

    out = tmp_path / "export"
    manifest = export_checkpoint(tiny_minilm_checkpoint, out, fp16=True, min_side=64, max_side=128)
    assert manifest.checks["fp32"]["passed"] and manifest.checks["fp16"]["passed"]
    assert manifest.input_shape("text_encoder", "token_ids")[1] == 66
    assert (out / "tokenizer.json").is_file() and not (out / "tokenizer.model").exists()
    torch_engine = create_engine("torch", tiny_minilm_checkpoint, input_size=(64, 64))
    for precision, atol in (("fp32", 1e-4), ("fp16", 2e-2)):
        onnx_engine = create_engine("onnx", out, input_size=(64, 64), precision=precision)
        phrase = "the man in the white shirt walking to the left on the street"
        a, b = torch_engine.encode_text(phrase), onnx_engine.encode_text(phrase)
        np.testing.assert_allclose(a.sentence, b.sentence, atol=atol)
        with pytest.raises(ValueError, match="65 word pieces; the limit is 64"):
            onnx_engine.encode_text(" ".join(["dog"] * 65))
