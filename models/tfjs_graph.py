"""TF.js graph models (``model.json`` + ``.bin`` shards) read without TensorFlow, as ONNX graphs.

A TF.js *graph model* is a frozen TensorFlow graph: ``modelTopology.node`` lists the nodes
(``name``, ``op``, ``input``, ``attr``) and ``weightsManifest`` the constants stored, in order,
in the binary shards (float32, int32, or float16 / uint8 / uint16 quantised). :func:`read_graph`
reads both; :func:`to_onnx` rewrites the graph node by node as an ONNX graph (opset 18) that ONNX
Runtime, TensorRT and Triton run like the project's own graphs. Only the ops the project's
detector uses are translated (:data:`SUPPORTED_OPS`); any other op is refused by name.

TensorFlow computes convolutions and pooling in NHWC; ONNX in NCHW: each such node is wrapped in
two transposes (ONNX Runtime removes the pairs that cancel). Torch-free: numpy and ``onnx``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SUPPORTED_OPS", "TFJSError", "TFJSGraph", "read_graph", "to_onnx"]


class TFJSError(ValueError):
    """A TF.js model file is missing, malformed, or uses an op this reader does not translate."""


_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}


@dataclass(frozen=True)
class TFJSGraph:
    """A TF.js graph model.

    Attributes:
        nodes: The graph's nodes in file order (``name``, ``op``, ``input``, ``attr``).
        weights: Constant name -> value (dequantised to float32 where stored quantised).
        inputs: Placeholder name -> static shape.
        outputs: The signature's output name -> static shape, in the signature's order.
        meta: ``generatedBy``, ``convertedBy`` and ``format`` of the file.
    """

    nodes: tuple[dict[str, Any], ...]
    weights: dict[str, np.ndarray]
    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]
    meta: dict[str, str]


def _dequantise(raw: bytes, spec: dict[str, Any]) -> tuple[np.ndarray, int]:
    """One weight of the shard bytes: (value, bytes consumed)."""
    shape = tuple(int(d) for d in spec["shape"])
    count = int(np.prod(shape)) if shape else 1
    quant = spec.get("quantization")
    if quant is None:
        dtype = _DTYPES.get(spec["dtype"])
        if dtype is None:
            raise TFJSError(f"weight {spec['name']}: dtype {spec['dtype']!r} is not supported")
        size = count * np.dtype(dtype).itemsize
        return np.frombuffer(raw[:size], dtype=dtype).reshape(shape).copy(), size
    qtype = quant["dtype"]
    if qtype == "float16":
        size = count * 2
        value = np.frombuffer(raw[:size], dtype=np.float16).astype(np.float32)
    elif qtype in ("uint8", "uint16"):
        dt = np.uint8 if qtype == "uint8" else np.uint16
        size = count * np.dtype(dt).itemsize
        q = np.frombuffer(raw[:size], dtype=dt).astype(np.float32)
        value = q * float(quant["scale"]) + float(quant["min"])
    else:
        raise TFJSError(f"weight {spec['name']}: quantisation {qtype!r} is not supported")
    return value.reshape(shape).astype(_DTYPES.get(spec["dtype"], np.float32)), size


def read_graph(model_json: str | Path) -> TFJSGraph:
    """Read a TF.js graph model: its ``model.json`` and the shards it names beside it.

    Raises:
        TFJSError: a missing or malformed file, a shard shorter than its manifest, a graph that
            is not a TF.js graph model.
    """
    path = Path(model_json)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        topology = spec["modelTopology"]
        nodes = tuple(topology["node"])
        manifest = spec["weightsManifest"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TFJSError(f"{path}: not a readable TF.js graph model ({exc})") from exc
    if spec.get("format") != "graph-model":
        raise TFJSError(f"{path}: format {spec.get('format')!r}, expected 'graph-model'")
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            raw = b"".join((path.parent / p).read_bytes() for p in group["paths"])
        except OSError as exc:
            raise TFJSError(f"{path}: weight shard missing ({exc})") from exc
        offset = 0
        for w in group["weights"]:
            value, used = _dequantise(raw[offset:], w)
            if value.size and offset + used > len(raw):
                raise TFJSError(f"{path}: shards end before weight {w['name']}")
            weights[w["name"]] = value
            offset += used
    inputs = {
        n["name"]: tuple(int(d["size"]) for d in n["attr"]["shape"]["shape"]["dim"])
        for n in nodes
        if n["op"] == "Placeholder"
    }
    signature = spec.get("signature") or topology.get("signature") or {}
    outputs = {
        o["name"].split(":")[0]: tuple(int(d["size"]) for d in o["tensorShape"]["dim"])
        for o in signature.get("outputs", {}).values()
    }
    meta = {k: str(spec.get(k, "")) for k in ("format", "generatedBy", "convertedBy")}
    return TFJSGraph(nodes=nodes, weights=weights, inputs=inputs, outputs=outputs, meta=meta)


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    """A node attribute as a Python value (TF.js stores strings base64-encoded)."""
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "b" in a:
        return bool(a["b"])
    if "f" in a:
        return float(a["f"])
    if "i" in a:
        return int(a["i"])
    if "list" in a:
        items = a["list"]
        return [int(v) for v in items.get("i", [])] or [float(v) for v in items.get("f", [])]
    return default


#: TF ops :func:`to_onnx` translates (and the ops that only pass a value on).
SUPPORTED_OPS = (
    "Placeholder", "Const", "Identity", "Transpose", "Add", "AddV2", "Conv2D", "Pad", "PadV2",
    "LeakyRelu", "ConcatV2", "SparseToDense", "Reshape", "ResizeBilinear", "SplitV", "Sigmoid",
    "MaxPool",
)  # fmt: skip


class _Builder:
    """Accumulates ONNX nodes and initialisers while the TF graph is walked in order."""

    def __init__(self, graph: TFJSGraph) -> None:
        self.graph = graph
        self.nodes: list[Any] = []
        self.inits: dict[str, np.ndarray] = {}
        self.consts: dict[str, np.ndarray] = {}  # values known now (shape arithmetic)
        self.count = 0

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}__{self.count}"

    def const(self, value: np.ndarray, base: str = "const") -> str:
        name = self.fresh(base)
        self.inits[name] = np.asarray(value)
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def nhwc(self, op: str, x: str, out: str, extra: list[str], **attrs: Any) -> None:
        """``op`` on an NHWC tensor: transpose to NCHW, ``op``, transpose back."""
        a, b = self.fresh(f"{out}_nchw"), self.fresh(f"{out}_op")
        self.node("Transpose", [x], [a], perm=[0, 3, 1, 2])
        self.node(op, [a, *extra], [b], **attrs)
        self.node("Transpose", [b], [out], perm=[0, 2, 3, 1])


def _source(ref: str) -> str:
    """A node input reference ``name`` / ``name:k`` as the ONNX value name."""
    name, _, k = ref.partition(":")
    return name if k in ("", "0") else f"{name}:{k}"


def _pads(paddings: np.ndarray) -> list[int]:
    """TF ``[[before, after], ...]`` -> ONNX ``[b0, b1, ..., a0, a1, ...]``."""
    p = np.asarray(paddings, dtype=np.int64).reshape(-1, 2)
    return [*p[:, 0].tolist(), *p[:, 1].tolist()]


def to_onnx(graph: TFJSGraph, *, opset: int = 18, any_size: bool = False) -> Any:
    """The TF.js graph as an ``onnx.ModelProto`` with the same input and output names.

    Args:
        graph: From :func:`read_graph`.
        opset: The ONNX opset.
        any_size: Let the graph take any input height and width (see :func:`_any_size`), not
            only the one the TF.js file was saved for.

    Raises:
        TFJSError: an op outside :data:`SUPPORTED_OPS`, or an attribute this reader cannot keep
            (a convolution with dilation, explicit padding not given as numbers).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    unsupported = sorted({n["op"] for n in graph.nodes} - set(SUPPORTED_OPS))
    if unsupported:
        raise TFJSError(f"TF ops this reader does not translate: {', '.join(unsupported)}")
    b = _Builder(graph)
    for n in graph.nodes:
        op, name = n["op"], n["name"]
        ins = [_source(i) for i in n.get("input", []) if not i.startswith("^")]
        if op == "Placeholder":
            continue
        if op == "Const":
            if name not in graph.weights:
                raise TFJSError(f"constant {name} has no weight in the manifest")
            value = graph.weights[name]
            b.consts[name] = value
            b.inits[name] = value
        elif op == "Identity":
            if ins[0] in b.consts:
                b.consts[name] = b.consts[ins[0]]
            b.node("Identity", ins[:1], [name])
        elif op == "Transpose":
            b.node("Transpose", ins[:1], [name], perm=[int(v) for v in b.consts[ins[1]]])
        elif op in ("Add", "AddV2"):
            if all(i in b.consts for i in ins):  # shape arithmetic: fold it
                b.consts[name] = b.consts[ins[0]] + b.consts[ins[1]]
                b.inits[name] = b.consts[name]
            else:
                b.node("Add", ins, [name])
        elif op == "SparseToDense":
            idx, shape, values, default = (b.consts[i] for i in ins)
            values = np.asarray(values).reshape(-1)
            dense = np.full(np.asarray(shape).reshape(-1), default, dtype=values.dtype)
            rank = dense.ndim
            for i, v in zip(np.asarray(idx).reshape(len(values), rank), values):
                dense[tuple(i)] = v
            b.consts[name] = dense
            b.inits[name] = dense
        elif op == "Conv2D":
            if _attr(n, "data_format", "NHWC") != "NHWC":
                raise TFJSError(f"{name}: only NHWC convolutions are supported")
            if any(d != 1 for d in _attr(n, "dilations", [1, 1, 1, 1])):
                raise TFJSError(f"{name}: dilated convolutions are not supported")
            kernel = b.consts[ins[1]]  # (kh, kw, in, out) -> ONNX (out, in, kh, kw)
            weight = b.const(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), f"{name}_w")
            strides = _attr(n, "strides", [1, 1, 1, 1])[1:3]
            padding = _attr(n, "padding", "VALID")
            attrs: dict[str, Any] = {"strides": strides, "kernel_shape": list(kernel.shape[:2])}
            if padding == "SAME":
                attrs["auto_pad"] = "SAME_UPPER"
            elif padding == "EXPLICIT":
                attrs["pads"] = _pads(np.asarray(_attr(n, "explicit_paddings"))[2:6])
            b.nhwc("Conv", ins[0], name, [weight], **attrs)
        elif op == "MaxPool":
            if _attr(n, "padding", "VALID") != "VALID" or _attr(n, "data_format") != "NHWC":
                raise TFJSError(f"{name}: only VALID NHWC max pooling is supported")
            b.nhwc("MaxPool", ins[0], name, [], kernel_shape=_attr(n, "ksize")[1:3],
                   strides=_attr(n, "strides")[1:3])  # fmt: skip
        elif op in ("Pad", "PadV2"):
            pads = b.const(np.asarray(_pads(b.consts[ins[1]]), np.int64), f"{name}_pads")
            extra = [pads]
            if op == "PadV2":
                extra.append(b.const(np.asarray(b.consts[ins[2]], np.float32).reshape(()),
                                     f"{name}_value"))  # fmt: skip
            b.node("Pad", [ins[0], *extra], [name], mode="constant")
        elif op == "LeakyRelu":
            b.node("LeakyRelu", ins[:1], [name], alpha=_attr(n, "alpha", 0.2))
        elif op == "Sigmoid":
            b.node("Sigmoid", ins[:1], [name])
        elif op == "ConcatV2":
            axis = int(b.consts[ins[-1]])
            b.node("Concat", ins[:-1], [name], axis=axis)
        elif op == "Reshape":
            shape = b.const(np.asarray(b.consts[ins[1]], np.int64).reshape(-1), f"{name}_shape")
            b.node("Reshape", [ins[0], shape], [name])
        elif op == "SplitV":
            sizes = b.const(np.asarray(b.consts[ins[1]], np.int64).reshape(-1), f"{name}_sizes")
            k = _attr(n, "num_split")
            outs = [name] + [f"{name}:{i}" for i in range(1, k)]
            b.node("Split", [ins[0], sizes], outs, axis=int(b.consts[ins[2]]))
        elif op == "ResizeBilinear":
            if _attr(n, "align_corners", False) or not _attr(n, "half_pixel_centers", False):
                raise TFJSError(f"{name}: only half-pixel-centre bilinear resizing is supported")
            hw = np.asarray(b.consts[ins[1]], np.int64).reshape(-1)
            mid = b.fresh(f"{name}_nchw")
            b.node("Transpose", ins[:1], [mid], perm=[0, 3, 1, 2])
            resized = b.fresh(f"{name}_resized")
            sizes = b.fresh(f"{name}_sizes")
            shape = b.fresh(f"{name}_shape")
            b.node("Shape", [mid], [shape], start=0, end=2)
            b.node("Concat", [shape, b.const(hw, f"{name}_hw")], [sizes], axis=0)
            b.node("Resize", [mid, "", "", sizes], [resized], mode="linear",
                   coordinate_transformation_mode="half_pixel")  # fmt: skip
            b.node("Transpose", [resized], [name], perm=[0, 2, 3, 1])
    used = {i for node in b.nodes for i in node.input}
    inits = [numpy_helper.from_array(v, k) for k, v in b.inits.items() if k in used]
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s))
              for k, s in graph.inputs.items()]  # fmt: skip
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s))
               for k, s in graph.outputs.items()]  # fmt: skip
    model = helper.make_model(
        helper.make_graph(b.nodes, "tfjs_graph", inputs, outputs, initializer=inits),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="hinet-stream models.tfjs_graph",
    )
    if any_size:
        model = _any_size(model)
    onnx.checker.check_model(model)
    return model


def _any_size(model: Any) -> Any:
    """``model`` with a symbolic input height and width, and every resize by a scale.

    A TF.js graph resizes to fixed sizes (TensorFlow's ``ResizeBilinear`` takes the output size);
    each such resize becomes one by the same ratio, read from the saved input size by ONNX shape
    inference (a feature pyramid's "twice as large" stays twice as large at any size). Every
    other op here is size-agnostic. Every input dimension but the batch and a channel axis (size
    1-4) becomes symbolic; the outputs keep their rank, batch and last dimension. At the saved
    size the result is the same graph's (to float rounding).

    Raises:
        TFJSError: a resize whose input size shape inference cannot tell.
    """
    from onnx import numpy_helper, shape_inference

    inferred = shape_inference.infer_shapes(model)
    dims = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*inferred.graph.value_info, *inferred.graph.input)
    }
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    scales = []
    for node in model.graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            continue
        concat = producers[node.input[3]]  # Concat(Shape(x)[:2], the fixed (h, w))
        hw = consts[concat.input[1]].astype(np.float64)
        src = dims.get(node.input[0], [])
        if len(src) != 4 or not all(src[2:]):
            raise TFJSError(f"resize {node.output[0]}: its input size is unknown")
        name = f"{node.output[0]}_scales"
        scales.append(numpy_helper.from_array(
            np.asarray([1, 1, hw[0] / src[2], hw[1] / src[3]], np.float32), name))  # fmt: skip
        node.input[2], node.input[3] = name, ""
        del node.input[3:]
    model.graph.initializer.extend(scales)
    while True:  # drop the size arithmetic (Shape, Concat) nothing reads now
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        keep = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(keep) == len(model.graph.node):
            break
        del model.graph.node[:]
        model.graph.node.extend(keep)
    live = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(live)
    for value in model.graph.input:  # the image's height and width, NCHW or NHWC
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if i > 0 and dim.dim_value > 4:  # not the batch, not a channel axis (1-4)
                dim.dim_param = f"{value.name}_{i}"
    for value in model.graph.output:
        for i, dim in enumerate(value.type.tensor_type.shape.dim[1:-1], start=1):
            dim.dim_param = f"{value.name}_{i}"
    del model.graph.value_info[:]
    return model
