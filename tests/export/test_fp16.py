"""The FP16 graph converter on small hand-built ONNX graphs (run with real ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.fp16 import convert_to_fp16


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _layernorm_graph() -> onnx.ModelProto:
    """x (1, 4, 8) -> MatMul(W) -> LayerNorm -> Softmax -> y; plus x -> Shape -> s."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32) * 4.0, "w")
    scale = numpy_helper.from_array(np.ones(8, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(8, np.float32), "bias")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("LayerNormalization", ["h", "scale", "bias"], ["n"], axis=-1),
        helper.make_node("Softmax", ["n"], ["y"], axis=-1),
        helper.make_node("Shape", ["x"], ["s"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [3]),
        ],
        initializer=[w, scale, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_large_activations_survive_through_fp32_islands():
    model = _layernorm_graph()
    # Activations of a few thousand: their squares (LayerNorm variance) overflow FP16's 65504.
    x = np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32) * 300.0
    ref_y, ref_s = _run(model, {"x": x})
    half = convert_to_fp16(model)
    y, s = _run(half, {"x": x})
    assert y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y, ref_y, atol=2e-2)
    np.testing.assert_array_equal(s, ref_s)
    g = half.graph
    types = {i.name: i.data_type for i in g.initializer}
    assert types["w"] == TensorProto.FLOAT16  # used only by an FP16 MatMul
    assert types["scale"] == TensorProto.FLOAT  # used by the FP32 LayerNorm
    ln = next(n for n in g.node if n.op_type == "LayerNormalization")
    producer = {o: n for n in g.node for o in n.output}
    cast = producer[ln.input[0]]
    assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
    assert model.graph.node[0].op_type == "MatMul"  # the input model is unchanged
    assert all(i.data_type == TensorProto.FLOAT for i in model.graph.initializer)


def test_outputs_consumed_inside_the_graph_stay_consistent():
    """An FP16 graph output that other nodes also consume is renamed and cast back once."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Mul", ["a", "a"], ["b"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.array([[-1.0, 2.0, 3.0], [0.5, -4.0, 6.0]], np.float32)
    a, b = _run(convert_to_fp16(model), {"x": x})
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, np.maximum(x, 0))
    np.testing.assert_allclose(b, np.maximum(x, 0) ** 2)


def test_subgraphs_are_refused():
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ValueError, match="subgraph"):
        convert_to_fp16(model)
