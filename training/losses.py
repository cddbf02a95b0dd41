"""Segmentation losses on mask logits: binary cross-entropy + Dice, with void pixels ignored.

Every function takes raw logits (never probabilities) so the sigmoid and the log are fused in a
numerically stable way, and a ``valid`` weight map so void pixels (mask value 255, see
:data:`training.sample.VOID`) contribute nothing.

Definitions (per sample ``b``, over its valid pixels ``i``; ``p = sigmoid(logit)``)::

    BCE_b  = sum_i -(t_i log p_i + (1 - t_i) log(1 - p_i)) / max(#valid_b, 1)
    Dice_b = 1 - (2 sum_i p_i t_i + s) / (sum_i p_i + sum_i t_i + s)      (s = smooth, default 1)

Both are averaged over the batch. The Dice smoothing makes an empty prediction of an empty target
score a loss of 0 and keeps the gradient finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "LossWeights",
    "bce_loss",
    "dice_loss",
    "segmentation_loss",
    "total_loss",
]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms.

    Attributes:
        bce: Weight of the binary cross-entropy.
        dice: Weight of the Dice loss.
        aux: Weight of each deep-supervision (auxiliary) output's BCE + Dice.
        smooth: Dice smoothing constant ``s`` (> 0).
    """

    bce: float = 1.0
    dice: float = 1.0
    aux: float = 0.4
    smooth: float = 1.0

    def __post_init__(self) -> None:
        for name in ("bce", "dice", "aux"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
        if self.bce == 0 and self.dice == 0:
            raise ValueError("at least one of the bce and dice weights must be positive")
        if self.smooth <= 0:
            raise ValueError(f"dice smooth must be > 0, got {self.smooth}")


def _check(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must be (B, 1, H, W), got {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} differs from logits {tuple(logits.shape)}"
        )
    if valid is None:
        return torch.ones_like(logits)
    if valid.shape != logits.shape:
        raise ValueError(
            f"valid shape {tuple(valid.shape)} differs from logits {tuple(logits.shape)}"
        )
    return valid.to(logits.dtype)


def bce_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy averaged over the valid pixels of each sample, then the batch.

    Args:
        logits: (B, 1, H, W) float mask logits.
        target: (B, 1, H, W) float in {0, 1}.
        valid: (B, 1, H, W) float/bool, 1 where the pixel counts; ``None`` = all pixels.

    Returns:
        Scalar float tensor.
    """
    w = _check(logits, target, valid)
    per_px = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    per_sample = (per_px * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1.0)  # (B,)
    return per_sample.mean()


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft Dice loss ``1 - (2|P∩T| + s) / (|P| + |T| + s)`` per sample, averaged over the batch.

    Args:
        logits: (B, 1, H, W) float mask logits.
        target: (B, 1, H, W) float in {0, 1}.
        valid: (B, 1, H, W) float/bool, 1 where the pixel counts; ``None`` = all pixels.
        smooth: ``s`` > 0.

    Returns:
        Scalar float tensor in [0, 1).
    """
    if smooth <= 0:
        raise ValueError(f"smooth must be > 0, got {smooth}")
    w = _check(logits, target, valid)
    p = torch.sigmoid(logits.float()) * w  # (B, 1, H, W)
    t = target.float() * w
    inter = (p * t).flatten(1).sum(1)  # (B,)
    denom = p.flatten(1).sum(1) + t.flatten(1).sum(1)  # (B,)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    weights: LossWeights = LossWeights(),
) -> dict[str, torch.Tensor]:
    """Weighted BCE + Dice of one output.

    Returns:
        ``{"loss": weighted sum, "bce": ..., "dice": ...}`` scalar tensors.
    """
    bce = bce_loss(logits, target, valid)
    dice = dice_loss(logits, target, valid, smooth=weights.smooth)
    return {"loss": weights.bce * bce + weights.dice * dice, "bce": bce, "dice": dice}


def total_loss(
    logits: torch.Tensor,
    aux: list[torch.Tensor],
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    weights: LossWeights = LossWeights(),
) -> dict[str, torch.Tensor]:
    """Main output's BCE + Dice plus ``weights.aux`` x the same for each auxiliary output.

    Args:
        logits: (B, 1, H, W) final mask logits.
        aux: Deep-supervision logits, each (B, 1, H, W) (empty list when off).
        target: (B, 1, H, W) float in {0, 1}.
        valid: (B, 1, H, W) valid-pixel map or ``None``.
        weights: Loss weights.

    Returns:
        ``{"loss", "bce", "dice"}`` of the main output (``loss`` includes the auxiliary terms)
        and ``"aux"`` (the weighted auxiliary sum, 0 when there is none).
    """
    out = segmentation_loss(logits, target, valid, weights=weights)
    aux_sum = logits.new_zeros(())
    for extra in aux:
        aux_sum = aux_sum + segmentation_loss(extra, target, valid, weights=weights)["loss"]
    aux_sum = weights.aux * aux_sum
    out["aux"] = aux_sum
    out["loss"] = out["loss"] + aux_sum
    return out
