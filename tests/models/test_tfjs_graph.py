"""The TF.js graph reader: a hand-made graph against numpy, and the shipped detector's graph."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from models.tfjs_graph import TFJSError, read_graph, to_onnx

ort = pytest.importorskip("onnxruntime")
DETECTOR = Path(__file__).resolve().parents[2] / "models" / "nanodet" / "nanodet.json"


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(*values: int) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _write(tmp: Path, nodes: list[dict], weights: dict[str, np.ndarray], out: dict) -> Path:
    """A TF.js graph model: conv kernel stored as float16 (quantised), the rest as float32."""
    specs, blobs = [], []
    for name, value in weights.items():
        spec = {"name": name, "shape": list(value.shape), "dtype": str(value.dtype)}
        if name == "kernel":
            spec["dtype"] = "float32"
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            blobs.append(value.astype(np.float16).tobytes())
        else:
            blobs.append(value.tobytes())
        specs.append(spec)
    (tmp / "w.bin").write_bytes(b"".join(blobs))
    model = {
        "format": "graph-model",
        "generatedBy": "test",
        "convertedBy": "test",
        "signature": {"outputs": out},
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["w.bin"], "weights": specs}],
    }
    path = tmp / "model.json"
    path.write_text(json.dumps(model))
    return path


def _conv_nhwc(x: np.ndarray, k: np.ndarray, stride: int) -> np.ndarray:
    """Reference VALID convolution, NHWC input, HWIO kernel."""
    kh, kw, _, co = k.shape
    h = (x.shape[1] - kh) // stride + 1
    w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((1, h, w, co), np.float32)
    for i in range(h):
        for j in range(w):
            patch = x[0, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[0, i, j] = np.tensordot(patch, k, axes=([0, 1, 2], [0, 1, 2]))
    return out


def test_a_small_graph_matches_numpy(tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    weights = {
        "perm": np.array([0, 2, 3, 1], np.int32),  # NCHW input -> NHWC
        "pads": np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32),
        "kernel": kernel,
        "bias": bias,
        "sizes": np.array([2, 2], np.int32),
        "axis": np.array(3, np.int32),
        "shape": np.array([1, -1, 4], np.int32),
        "zero_idx": np.zeros((0, 1), np.int32),
        "zero_vals": np.zeros((0,), np.int32),
        "zero_shape": np.array([3], np.int32),
        "zero_default": np.array(0, np.int32),
    }
    conv_attr = {"padding": _s("VALID"), "data_format": _s("NHWC"), "strides": _ints(1, 2, 2, 1),
                 "dilations": _ints(1, 1, 1, 1)}  # fmt: skip
    nodes = [
        {"name": "x", "op": "Placeholder",
         "attr": {"shape": {"shape": {"dim": [{"size": "1"}, {"size": "2"}, {"size": "7"},
                                              {"size": "7"}]}}}},
        *({"name": n, "op": "Const"} for n in weights),
        {"name": "nhwc", "op": "Transpose", "input": ["x", "perm"]},
        {"name": "padded", "op": "Pad", "input": ["nhwc", "pads"]},
        {"name": "conv", "op": "Conv2D", "input": ["padded", "kernel"], "attr": conv_attr},
        {"name": "biased", "op": "Add", "input": ["conv", "bias"]},
        {"name": "act", "op": "LeakyRelu", "input": ["biased"], "attr": {"alpha": {"f": 0.1}}},
        {"name": "split", "op": "SplitV", "input": ["act", "sizes", "axis"],
         "attr": {"num_split": {"i": "2"}}},
        {"name": "sig", "op": "Sigmoid", "input": ["split"]},
        {"name": "cat", "op": "ConcatV2", "input": ["sig", "split:1", "axis"]},
        {"name": "zero_dense", "op": "SparseToDense",
         "input": ["zero_idx", "zero_shape", "zero_vals", "zero_default"]},
        {"name": "shape2", "op": "AddV2", "input": ["shape", "zero_dense"]},  # folded: constant
        {"name": "flat", "op": "Reshape", "input": ["cat", "shape2"]},
        {"name": "Identity", "op": "Identity", "input": ["flat"]},
    ]  # fmt: skip
    out = {"Identity:0": {"name": "Identity:0", "tensorShape": {"dim": [{"size": "1"},
                                                                         {"size": "16"},
                                                                         {"size": "4"}]}}}  # fmt: skip
    graph = read_graph(_write(tmp_path, nodes, weights, out))
    model = to_onnx(graph)
    x = rng.standard_normal((1, 2, 7, 7)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    k16 = kernel.astype(np.float16).astype(np.float32)  # what the quantised file holds
    nhwc = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = _conv_nhwc(nhwc, k16, 2) + bias
    y = np.where(y > 0, y, 0.1 * y)
    want = np.concatenate([1 / (1 + np.exp(-y[..., :2])), y[..., 2:]], axis=3).reshape(1, -1, 4)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_unsupported_ops_and_bad_files_are_refused(tmp_path):
    nodes = [
        {"name": "x", "op": "Placeholder",
         "attr": {"shape": {"shape": {"dim": [{"size": "1"}, {"size": "2"}]}}}},
        {"name": "y", "op": "Softmax", "input": ["x"]},
    ]  # fmt: skip
    path = _write(tmp_path, nodes, {}, {})
    with pytest.raises(TFJSError, match="does not translate: Softmax"):
        to_onnx(read_graph(path))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TFJSError, match="not a readable TF.js graph model"):
        read_graph(tmp_path / "bad.json")
    spec = json.loads(path.read_text())
    spec["weightsManifest"] = [{"paths": ["missing.bin"], "weights": []}]
    (tmp_path / "m.json").write_text(json.dumps(spec))
    with pytest.raises(TFJSError, match="weight shard missing"):
        read_graph(tmp_path / "m.json")


def test_the_shipped_detector_graph_translates():
    graph = read_graph(DETECTOR)
    assert graph.inputs == {"input_1": (1, 3, 416, 416)}
    assert sorted(graph.outputs.values()) == sorted(
        [(1, n, c) for n in (2704, 676, 169) for c in (80, 44)]
    )
    assert graph.meta["generatedBy"] == "https://github.com/RangiLyu/nanodet"
    assert all(v.dtype in (np.float32, np.int32) for v in graph.weights.values())
    model = to_onnx(graph)
    assert {o.name for o in model.graph.output} == set(graph.outputs)


def test_the_detector_graph_takes_any_size():
    # The pyramid's fixed-size resizes become ratios: at the saved 416x416 the graph is the
    # same; at 480x640 (a 4:3 frame at its own scale) every stride's grid follows the input.
    graph = read_graph(DETECTOR)
    fixed, free = to_onnx(graph), to_onnx(graph, any_size=True)
    assert [d.dim_param for d in free.graph.input[0].type.tensor_type.shape.dim][2:] != ["", ""]
    run = {
        name: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        for name, m in (("fixed", fixed), ("free", free))
    }
    x = np.random.default_rng(0).standard_normal((1, 3, 416, 416)).astype(np.float32)
    for a, b in zip(run["fixed"].run(None, {"input_1": x}), run["free"].run(None, {"input_1": x})):
        np.testing.assert_allclose(a, b, atol=1e-4)
    x = np.zeros((1, 3, 480, 640), np.float32)
    shapes = sorted(o.shape for o in run["free"].run(None, {"input_1": x}))
    assert shapes == sorted((1, 480 * 640 // s**2, c) for s in (8, 16, 32) for c in (80, 44))
