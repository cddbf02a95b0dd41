"""FP16 variant of an exported FP32 ONNX graph, with FP32 islands where FP16 is unsafe.

Done directly over the ONNX graph (no third-party converter, the torch model is untouched):

1. Every node runs in FP16 except the ops in :data:`FP32_OPS` — softmax, LayerNorm and the
   reductions/exponentials that normalisation is built from. Softmax sums exponentials and
   LayerNorm squares activations before averaging: both overflow FP16's 65504 range or lose
   most of their mantissa for inputs that are harmless in FP32.
2. A ``Cast`` is inserted wherever a value's dtype differs from what its consumer runs in (once
   per value and dtype). Inputs that an op requires in FP32 whatever its mode (``Resize``
   ``roi``/``scales``) are cast to FP32.
3. FP32 initializers used only by FP16 nodes are stored in FP16 (clipped to +-65504); the
   others stay FP32 and get a ``Cast`` where an FP16 node uses them. ``Constant`` /
   ``ConstantOfShape`` float values and ``Cast(to=FLOAT)`` become FP16 in FP16 nodes.
4. Graph inputs and outputs keep FP32 (callers, the engine interface and TensorRT bindings see
   the same dtypes as the FP32 graph); the final ``logits`` are cast back to FP32.

Inference-time ``BatchNormalization`` (usually folded into the preceding ``Conv`` by the
exporter anyway) is a per-channel affine with stored statistics, safe in FP16, and is left FP16.
The result is numerically checked against torch like the FP32 graph (:mod:`export.check`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["FP32_OPS", "FP32_INPUTS", "convert_to_fp16"]

#: Ops that always compute in FP32.
FP32_OPS = frozenset(
    {
        "Softmax",
        "LogSoftmax",
        "LayerNormalization",
        "GroupNormalization",
        "InstanceNormalization",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceLogSumExp",
        "Pow",
        "Sqrt",
        "Exp",
        "Log",
        "Reciprocal",
        "Range",  # no FP16 kernel in the ONNX spec (coordinate channels stay exact)
    }
)

#: op -> input indices that must be FP32 whatever the node's mode.
FP32_INPUTS = {"Resize": frozenset({1, 2})}

#: Ops whose inputs may be any type (no cast inserted on their inputs).
_ANY_TYPE_INPUT_OPS = frozenset({"Shape", "Size", "Cast", "CastLike"})

_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)
_FP16_MAX = 65504.0


def _type_map(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types: dict[str, int] = {}
    for v in [*g.input, *g.value_info, *g.output]:
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def _to_fp16_tensor(t: TensorProto) -> TensorProto:
    arr = numpy_helper.to_array(t).astype(np.float32)
    half = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(half, t.name)


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return an FP16 copy of an FP32 graph (FP32 inputs/outputs; see the module docstring).

    Args:
        model: A checked FP32 ONNX model without subgraphs or local functions (as written by
            :mod:`export.onnx_export`).

    Returns:
        A new model; ``model`` is not modified.

    Raises:
        ValueError: the graph has subgraphs/functions or a float value of unknown type.
    """
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    src = model.graph
    for node in src.node:
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            raise ValueError(f"node {node.name} ({node.op_type}) has a subgraph; not supported")
    types = _type_map(model)
    out_model = onnx.ModelProto()
    out_model.CopyFrom(model)
    g = out_model.graph
    del g.node[:]
    del g.value_info[:]

    # Which precision each initializer must have: FP16 only if every float use wants FP16.
    modes = {
        n.name or f"#{i}": ("fp32" if n.op_type in FP32_OPS else "fp16")
        for i, n in enumerate(src.node)
    }
    init_names = {t.name for t in src.initializer if t.data_type == TensorProto.FLOAT}
    init_wants_fp32: set[str] = set()
    for i, node in enumerate(src.node):
        mode = modes[node.name or f"#{i}"]
        fixed = FP32_INPUTS.get(node.op_type, frozenset())
        for j, name in enumerate(node.input):
            in_fp32 = mode == "fp32" or j in fixed
            if name in init_names and node.op_type not in _ANY_TYPE_INPUT_OPS and in_fp32:
                init_wants_fp32.add(name)
    new_inits = []
    for t in src.initializer:
        if t.name in init_names and t.name not in init_wants_fp32:
            new_inits.append(_to_fp16_tensor(t))
            types[t.name] = TensorProto.FLOAT16
        else:
            new_inits.append(t)
    del g.initializer[:]
    g.initializer.extend(new_inits)

    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            out = f"{name}__{suffix}"
            nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{out}__cast"))
            casts[key] = out
            types[out] = to
        return casts[key]

    for i, node in enumerate(src.node):
        mode = modes[node.name or f"#{i}"]
        want = TensorProto.FLOAT16 if mode == "fp16" else TensorProto.FLOAT
        new = onnx.NodeProto()
        new.CopyFrom(node)
        if node.op_type not in _ANY_TYPE_INPUT_OPS:
            fixed = FP32_INPUTS.get(node.op_type, frozenset())
            for j, name in enumerate(node.input):
                if not name or types.get(name) not in _FLOATS:
                    continue
                target = TensorProto.FLOAT if j in fixed else want
                if types[name] != target:
                    new.input[j] = cast(name, target)
        if mode == "fp16":
            for attr in new.attribute:
                if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
                elif (
                    node.op_type in ("Constant", "ConstantOfShape")
                    and attr.name == "value"
                    and attr.t.data_type == TensorProto.FLOAT
                ):
                    attr.t.CopyFrom(_to_fp16_tensor(attr.t))
        for name in node.output:
            if not name:
                continue
            if name not in types:
                raise ValueError(
                    f"no type known for {name!r} (output of {node.op_type}); cannot convert"
                )
            if types[name] in _FLOATS:
                types[name] = want
        nodes.append(new)

    # Graph outputs keep FP32: rename FP16 producers' values and cast back at the end.
    for out in g.output:
        if (
            out.type.tensor_type.elem_type != TensorProto.FLOAT
            or types[out.name] != TensorProto.FLOAT16
        ):
            continue
        inner = f"{out.name}__fp16out"
        for n in nodes:
            for j, name in enumerate(n.input):
                if name == out.name:
                    n.input[j] = inner
            for j, name in enumerate(n.output):
                if name == out.name:
                    n.output[j] = inner
        nodes.append(
            helper.make_node(
                "Cast", [inner], [out.name], to=TensorProto.FLOAT, name=f"{out.name}__cast_out"
            )
        )
    g.node.extend(nodes)
    return out_model
