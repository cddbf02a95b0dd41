"""Small layers that several modules of the network use (a leaf: imports nothing of the project).

* :func:`masked_softmax` with the finite :data:`MASK_BIAS` (attention that exports to ONNX and
  stays finite in FP16), used by both text encoders and the pixel-word interaction;
* :func:`conv_bn_relu` and :func:`init_weights`, used by the interaction, the motion gate and the
  decoder.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MASK_BIAS", "conv_bn_relu", "init_weights", "masked_softmax"]

#: Added to attention scores of padded keys; finite so FP16 graphs never see ``-inf``.
MASK_BIAS = -1.0e4


def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis ignoring masked keys.

    Args:
        scores: (..., Q, K) float attention scores.
        key_mask: (..., 1, K) float, 1 for valid keys and 0 for padding (broadcast over Q).

    Returns:
        (..., Q, K) probabilities; padded keys get (numerically) zero weight.
    """
    return torch.softmax(scores + (1.0 - key_mask) * MASK_BIAS, dim=-1)


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    """``kernel x kernel`` conv (stride 1, same size) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def init_weights(module: nn.Module) -> None:
    """Initialise the non-backbone layers of ``module`` in place.

    Convolutions get He-normal (fan-out, ReLU) weights and zero bias, BatchNorm scale 1 and
    shift 0, linear layers a normal(0, 0.02) weight and zero bias. PyTorch's default conv init
    shrinks the signal by about sqrt(3) per layer, which leaves an untrained head almost blind
    to its inputs.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
