"""Top-down decoder: M5 -> M4 -> M3, then the C2 skip, then 1x1 mask logits at stride 4.

Each step upsamples the coarser map bilinearly to the finer map's exact size (``size=``, never
``scale_factor``, so odd input sizes and ONNX export work), concatenates the finer map and
applies two 3x3 conv-BN-ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import conv_bn_relu, init_weights

__all__ = ["Decoder", "upsample_to"]


def upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize (B, C, h, w) ``x`` to ``ref``'s spatial size."""
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def _step(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(in_ch, out_ch, 3), conv_bn_relu(out_ch, out_ch, 3))


class Decoder(nn.Module):
    """Top-down decoder.

    Args:
        fusion_dim: Width of M3, M4, M5.
        skip_ch: Channels of the backbone's C2 (stride 4).
        dim: Decoder width (``config.decoder_dim``).
    """

    def __init__(self, *, fusion_dim: int, skip_ch: int, dim: int) -> None:
        super().__init__()
        self.step4 = _step(fusion_dim + fusion_dim, dim)
        self.step3 = _step(dim + fusion_dim, dim)
        self.step2 = _step(dim + skip_ch, dim)
        self.head = nn.Conv2d(dim, 1, 1)
        init_weights(self)
        nn.init.normal_(self.head.weight, std=0.01)

    def forward(
        self, m3: torch.Tensor, m4: torch.Tensor, m5: torch.Tensor, c2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode.

        Args:
            m3: (B, fusion_dim, H/8, W/8).
            m4: (B, fusion_dim, H/16, W/16).
            m5: (B, fusion_dim, H/32, W/32).
            c2: (B, skip_ch, H/4, W/4).

        Returns:
            ``(logits, x4)``: (B, 1, H/4, W/4) mask logits and the (B, dim, H/16, W/16)
            stride-16 decoder feature (used by deep supervision).
        """
        x4 = self.step4(torch.cat([upsample_to(m5, m4), m4], dim=1))  # (B, dim, H/16, W/16)
        x3 = self.step3(torch.cat([upsample_to(x4, m3), m3], dim=1))  # (B, dim, H/8, W/8)
        x2 = self.step2(torch.cat([upsample_to(x3, c2), c2], dim=1))  # (B, dim, H/4, W/4)
        return self.head(x2), x4
