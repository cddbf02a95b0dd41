"""A float TFLite graph as a torch module: the project's own converter for pretrained TFLite parts.

MediaPipe ships its person models only as TFLite files. This module reads such a file (the
flatbuffer, through the schema bindings of the PyPI package ``tflite``) and runs its operators
with torch ops, so the model is part of a torch network and exports to ONNX (and from there
TensorRT) with the rest of the frame graph. Nothing of TensorFlow is needed.

Tensors keep TFLite's NHWC layout between operators (so ``RESHAPE`` and axes mean what the file
says); convolutions, pools and resizes permute to torch's NCHW and back. Weights are
``float16`` or ``float32`` constants (``DEQUANTIZE`` of float16 is a cast); integer-quantised
graphs are refused. ``SAME`` padding is TFLite's: the extra pixel goes after, not before.

Supported operators: ``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``AVERAGE_POOL_2D``, ``MAX_POOL_2D``,
``ADD``, ``MUL``, ``RELU``, ``HARD_SWISH``, ``LOGISTIC``, ``MEAN``, ``PAD``, ``RESHAPE``,
``RESIZE_BILINEAR``, ``DEQUANTIZE`` and MediaPipe's custom ``Convolution2DTransposeBias``. An
unsupported operator is refused when the file is read, never half-way through a forward.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TFLiteError", "TFLiteGraph"]

SUPPORTED = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "ADD",
        "MUL",
        "RELU",
        "HARD_SWISH",
        "LOGISTIC",
        "MEAN",
        "PAD",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "DEQUANTIZE",
        "Convolution2DTransposeBias",
    }
)
#: TFLite ``TensorType`` -> numpy dtype (the types float graphs hold).
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}
_CUSTOM = 32  # BuiltinOperator.CUSTOM


class TFLiteError(ValueError):
    """A TFLite file this converter cannot read: corrupt, quantised, or an unsupported op."""


def _same(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite's ``SAME`` padding of one axis: (before, after), the odd pixel after."""
    span = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def _activation(x: torch.Tensor, code: int) -> torch.Tensor:
    if code == 0:
        return x
    if code == 1:
        return F.relu(x)
    if code == 2:
        return x.clamp(-1.0, 1.0)
    if code == 3:
        return x.clamp(0.0, 6.0)
    raise TFLiteError(f"fused activation {code} is not supported")


class _Op:
    """One operator: its name, tensor indices and parsed options."""

    __slots__ = ("name", "inputs", "output", "options")

    def __init__(self, name: str, inputs: list[int], output: int, options: dict[str, Any]):
        self.name, self.inputs, self.output, self.options = name, inputs, output, options


class TFLiteGraph(nn.Module):
    """A float TFLite model's first subgraph, run with torch ops (NHWC in, NHWC out).

    Args:
        source: The ``.tflite`` file (path) or its bytes.

    Attributes:
        input_shape: The file's input shape, NHWC (batch 1 in the file; any batch runs).
        output_names: Names of the file's outputs, in order.

    Raises:
        TFLiteError: not a TFLite file, more than one input, quantised, or an operator outside
            :data:`SUPPORTED` (the message names it).
    """

    def __init__(self, source: str | Path | bytes) -> None:
        super().__init__()
        try:
            import tflite
        except ModuleNotFoundError as exc:  # pragma: no cover - a dependency of the project
            raise ModuleNotFoundError(
                "reading TFLite files needs the PyPI package 'tflite'"
            ) from exc
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise TFLiteError("not a TFLite file (no TFL3 identifier)")
        try:
            model = tflite.Model.GetRootAsModel(data, 0)
            graph = model.Subgraphs(0)
            self._read(tflite, model, graph)
        except TFLiteError:
            raise
        except Exception as exc:  # a truncated or corrupt flatbuffer raises anything
            raise TFLiteError(f"corrupt TFLite file: {exc}") from exc

    def _read(self, tflite: Any, model: Any, graph: Any) -> None:
        names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        if graph.InputsLength() != 1:
            raise TFLiteError(f"expected one input, the file has {graph.InputsLength()}")
        self.input_index = int(graph.Inputs(0))
        self.input_shape = tuple(int(v) for v in graph.Tensors(self.input_index).ShapeAsNumpy())
        self.output_indices = [int(graph.Outputs(i)) for i in range(graph.OutputsLength())]
        self.output_names = [graph.Tensors(i).Name().decode() for i in self.output_indices]
        self._const: dict[int, str] = {}
        ints: dict[int, list] = {}  # integer constants (shapes, pads, axes): Python values
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            buf = model.Buffers(t.Buffer())
            if not buf.DataLength():
                continue
            if t.Type() not in _DTYPES:
                raise TFLiteError(f"tensor {t.Name().decode()!r} has type {t.Type()}: quantised?")
            arr = np.frombuffer(buf.DataAsNumpy().tobytes(), _DTYPES[t.Type()])
            arr = arr.reshape([int(v) for v in t.ShapeAsNumpy()]) if t.ShapeLength() else arr
            if arr.dtype.kind == "i":
                ints[i] = arr.tolist()
                continue
            name = f"t{i}"
            value = torch.from_numpy(arr.astype(np.float32) if t.Type() == 1 else arr.copy())
            self.register_buffer(name, value, persistent=False)
            self._const[i] = name
        self._ops: list[_Op] = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = code.CustomCode().decode() if builtin == _CUSTOM else names.get(builtin, "?")
            if name not in SUPPORTED:
                raise TFLiteError(f"operator {name} ({builtin}) is not supported")
            ins = [int(j) for j in op.InputsAsNumpy()]
            options = _options(tflite, name, op)
            if name in ("PAD", "RESHAPE", "RESIZE_BILINEAR", "MEAN"):
                if len(ins) < 2 or ins[1] not in ints:
                    raise TFLiteError(f"{name} with a computed (not constant) second input")
                options["ints"] = ints[ins[1]]
                ins = ins[:1]  # read at load time: the traced graph holds no data-dependent shape
            self._ops.append(_Op(name, ins, int(op.Outputs(0)), options))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, H, W, C) float32 NHWC -> the file's outputs (NHWC where they are images)."""
        env: dict[int, torch.Tensor] = {self.input_index: x}
        for op in self._ops:
            args = [
                env[j] if j in env else getattr(self, self._const[j]) if j >= 0 else None
                for j in op.inputs
            ]
            env[op.output] = _run(op, args)
        return [env[i] for i in self.output_indices]


def _options(tflite: Any, name: str, op: Any) -> dict[str, Any]:
    """The options of ``op`` that :func:`_run` reads, as plain values."""

    def table(cls: Any) -> Any:
        o = cls()
        o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        return o

    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = table(tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions)
        return {
            "same": o.Padding() == tflite.Padding.SAME,
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "act": o.FusedActivationFunction(),
        }
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = table(tflite.Pool2DOptions)
        return {
            "same": o.Padding() == tflite.Padding.SAME,
            "kernel": (o.FilterHeight(), o.FilterWidth()),
            "stride": (o.StrideH(), o.StrideW()),
            "act": o.FusedActivationFunction(),
        }
    if name in ("ADD", "MUL"):
        o = table(tflite.AddOptions if name == "ADD" else tflite.MulOptions)
        return {"act": o.FusedActivationFunction()}
    if name == "MEAN":
        return {"keep_dims": bool(table(tflite.ReducerOptions).KeepDims())}
    if name == "RESIZE_BILINEAR":
        o = table(tflite.ResizeBilinearOptions)
        if not (o.AlignCorners() or o.HalfPixelCenters()):
            raise TFLiteError("RESIZE_BILINEAR without align_corners or half_pixel_centers")
        return {"align_corners": bool(o.AlignCorners())}
    if name == "Convolution2DTransposeBias":
        # MediaPipe's TfLiteTransposeConvParams, raw: padding, stride_width, stride_height.
        padding, stride_w, stride_h = np.frombuffer(op.CustomOptionsAsNumpy().tobytes()[:12], "<i4")
        return {"same": int(padding) == 1, "stride": (int(stride_h), int(stride_w))}
    return {}


def _pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int] = (1, 1), value: float = 0.0) -> torch.Tensor:  # fmt: skip
    ph = _same(x.shape[2], kernel[0], stride[0], dilation[0])
    pw = _same(x.shape[3], kernel[1], stride[1], dilation[1])
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)


def _run(op: _Op, a: list[torch.Tensor | None]) -> torch.Tensor:
    """One operator on NHWC tensors."""
    o, name = op.options, op.name
    if name == "DEQUANTIZE":
        return a[0].float()
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        x = a[0].permute(0, 3, 1, 2)
        if name == "CONV_2D":  # (O, KH, KW, I) -> (O, I, KH, KW)
            w, groups = a[1].permute(0, 3, 1, 2), 1
        else:  # (1, KH, KW, C * m) -> (C * m, 1, KH, KW)
            w, groups = a[1].permute(3, 0, 1, 2), x.shape[1]
        if o["same"]:
            x = _pad_same(x, tuple(w.shape[2:]), o["stride"], o["dilation"])
        y = F.conv2d(x, w, a[2], stride=o["stride"], dilation=o["dilation"], groups=groups)
        return _activation(y, o["act"]).permute(0, 2, 3, 1)
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        x, k, s = a[0].permute(0, 3, 1, 2), o["kernel"], o["stride"]
        if name == "MAX_POOL_2D":
            if o["same"]:
                x = _pad_same(x, k, s, value=-math.inf)
            y = F.max_pool2d(x, k, s)
        elif o["same"]:  # TFLite averages over the pixels inside the image only
            ones = _pad_same(torch.ones_like(x[:, :1]), k, s)
            y = F.avg_pool2d(_pad_same(x, k, s), k, s) / F.avg_pool2d(ones, k, s)
        else:
            y = F.avg_pool2d(x, k, s)
        return _activation(y, o["act"]).permute(0, 2, 3, 1)
    if name == "ADD":
        return _activation(a[0] + a[1], o["act"])
    if name == "MUL":
        return _activation(a[0] * a[1], o["act"])
    if name == "RELU":
        return F.relu(a[0])
    if name == "HARD_SWISH":
        return F.hardswish(a[0])
    if name == "LOGISTIC":
        return torch.sigmoid(a[0])
    if name == "MEAN":
        axes = np.asarray(o["ints"]).reshape(-1).tolist()
        return a[0].mean(dim=axes, keepdim=o["keep_dims"])
    if name == "PAD":
        p = o["ints"]  # NHWC (before, after) pairs
        return F.pad(a[0], (p[3][0], p[3][1], p[2][0], p[2][1], p[1][0], p[1][1]))
    if name == "RESHAPE":
        return a[0].reshape([a[0].shape[0], *o["ints"][1:]])
    if name == "RESIZE_BILINEAR":
        y = F.interpolate(a[0].permute(0, 3, 1, 2), size=o["ints"], mode="bilinear",
                          align_corners=o["align_corners"])  # fmt: skip
        return y.permute(0, 2, 3, 1)
    if name == "Convolution2DTransposeBias":
        x = a[0].permute(0, 3, 1, 2)
        w = a[1].permute(3, 0, 1, 2)  # (O, KH, KW, I) -> (I, O, KH, KW)
        y = F.conv_transpose2d(x, w, a[2], stride=o["stride"])
        if o["same"]:  # output = input * stride, the surplus cropped evenly (odd pixel after)
            oh, ow = x.shape[2] * o["stride"][0], x.shape[3] * o["stride"][1]
            th, tw = (y.shape[2] - oh) // 2, (y.shape[3] - ow) // 2
            y = y[:, :, th : th + oh, tw : tw + ow]
        return y.permute(0, 2, 3, 1)
    raise TFLiteError(f"operator {name} is not supported")  # unreachable: refused on read
