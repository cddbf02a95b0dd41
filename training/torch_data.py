"""Torch dataset over :class:`training.sample.Sample` sequences, with aligned augmentation.

Network inputs are made by the deployment code (:func:`engine.preprocess.prepare_image` and
:func:`engine.preprocess.prepare_flow`), so training and every runtime backend see the same
image normalisation and the same flow scaling.

Augmentation keeps the frame, the optical flow, the mask and the expression consistent:

* **scale / crop** (zoom in by ``s``): the same window is cut from frame, flow and mask and
  resized to the network input; flow vectors are rescaled by the resize factor of each axis
  (they are pixel displacements of the new grid).
* **horizontal flip**: frame, flow and mask are mirrored, the flow's ``dx`` is negated, and the
  words ``left`` / ``right`` in the expression are swapped ("the square moving left" still
  refers to the same object after the flip).
* **colour jitter** (brightness, contrast, saturation) on the frame only. No hue jitter: the
  expressions name colours, and a hue shift would make "the red circle" wrong.

Randomness is a pure function of ``(seed, epoch, index)`` (a fresh ``numpy`` generator per item),
so a batch is the same whichever worker builds it and a resumed run reproduces it exactly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from engine.flow import OpticalFlow
from engine.preprocess import prepare_flow, prepare_image
from models.config import HINetConfig
from models.grounding import simulate_prior
from models.tokenizer import PhraseTokenizer
from training.referent_sim import simulate_referent
from training.sample import VOID, Sample
from training.synthetic.spatial import spatial_expression
from training.synthetic.wording import real_noun, reword

__all__ = [
    "AugmentConfig",
    "Augmented",
    "ReferringTorchDataset",
    "augment",
    "flow_to_grid",
    "swap_left_right",
    "trim_tokens",
]

logger = logging.getLogger(__name__)

_LEFT_RIGHT = re.compile(r"\b(left|right)(most|wards?)?\b")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation.

    Attributes:
        hflip: Probability of a horizontal flip, in [0, 1].
        scale: ``(lo, hi)`` zoom-in factor range, ``1 <= lo <= hi``; the crop window is
            ``1/s`` of the frame on each side. ``(1, 1)`` disables cropping.
        brightness: Brightness factor drawn from ``1 +- brightness``, in [0, 1).
        contrast: Contrast factor drawn from ``1 +- contrast``, in [0, 1).
        saturation: Saturation factor drawn from ``1 +- saturation``, in [0, 1).
        reword: Probability of wording a synthetic referent anew from its attributes with the
            training lexicon (:func:`training.synthetic.wording.reword`), in [0, 1].
        spatial: Probability of wording a synthetic referent by its position among the objects
            of its shape ("the circle on the left", :mod:`training.synthetic.spatial`) when
            its frame allows it, in [0, 1]; taken before ``reword``.
        noun: Grounding-prior models only: probability that a sample whose prior is simulated
            names a real-world noun instead of its shape, in [0, 1]
            (:func:`training.synthetic.wording.real_noun`).
    """

    hflip: float = 0.5
    scale: tuple[float, float] = (1.0, 1.25)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.1
    reword: float = 0.0
    spatial: float = 0.0
    noun: float = 0.0

    def __post_init__(self) -> None:
        for name in ("spatial", "noun"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"{name} must be a probability in [0, 1], got {getattr(self, name)}"
                )
        if not 0.0 <= self.reword <= 1.0:
            raise ValueError(f"reword must be a probability in [0, 1], got {self.reword}")
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1], got {self.hflip}")
        lo, hi = self.scale
        if not 1.0 <= lo <= hi <= 4.0:
            raise ValueError(f"scale must satisfy 1 <= lo <= hi <= 4, got {self.scale}")
        for name in ("brightness", "contrast", "saturation"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        """Build from a JSON object; unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown augment keys {unknown}; valid: {', '.join(sorted(known))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class Augmented:
    """One augmented sample, every array on the same ``(H, W)`` grid.

    Attributes:
        frame: (H, W, 3) uint8 BGR.
        flow: (H, W, 2) float32 pixel flow (dx, dy) of this grid.
        mask: (H, W) uint8, 1 object / 0 background / 255 void.
        expression: The expression, with left/right swapped if the sample was flipped.
        flipped: Whether a horizontal flip was applied.
        scale: The zoom factor used (1.0 = whole frame).
        categories: (H, W) uint8 category map cropped and flipped like the mask, or ``None``.
    """

    frame: np.ndarray
    flow: np.ndarray
    mask: np.ndarray
    expression: str
    flipped: bool
    scale: float
    categories: np.ndarray | None = None


def swap_left_right(expression: str) -> str:
    """Swap the words ``left`` and ``right`` (also ``leftmost``, ``rightward(s)``)."""

    def repl(m: re.Match[str]) -> str:
        word = "right" if m.group(1) == "left" else "left"
        return word + (m.group(2) or "")

    return _LEFT_RIGHT.sub(repl, expression)


def flow_to_grid(flow_px: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resample a pixel flow field onto an ``(H, W)`` grid, rescaling the vectors.

    Args:
        flow_px: (h, w, 2) float32 (dx, dy) in pixels of the ``h x w`` grid.
        hw: Target ``(H, W)``.

    Returns:
        (H, W, 2) float32 in pixels of the target grid (``dx * W / w``, ``dy * H / h``).
    """
    fh, fw = flow_px.shape[:2]
    h, w = hw
    flow = flow_px.astype(np.float32, copy=False)
    if (fh, fw) == (h, w):
        return flow.copy()
    out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)  # (H, W, 2)
    out[..., 0] *= w / fw
    out[..., 1] *= h / fh
    return out


def _colour_jitter(frame: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    img = frame.astype(np.float32)
    grey = img @ np.asarray([0.114, 0.587, 0.299], np.float32)  # (H, W) BGR -> luma
    b = 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    c = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    s = 1.0 + rng.uniform(-cfg.saturation, cfg.saturation)
    img = img * b
    grey = grey * b
    img = grey[..., None] + s * (img - grey[..., None])  # saturation
    img = grey.mean() + c * (img - grey.mean())  # contrast
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def augment(
    frame: np.ndarray,
    flow_px: np.ndarray,
    mask: np.ndarray,
    expression: str,
    *,
    out_size: tuple[int, int],
    rng: np.random.Generator,
    config: AugmentConfig,
    categories: np.ndarray | None = None,
) -> Augmented:
    """Scale/crop, flip and colour-jitter one sample consistently.

    Args:
        frame: (H0, W0, 3) uint8 BGR.
        flow_px: (h, w, 2) float32 pixel flow on any grid (resampled to the frame's first).
        mask: (H0, W0) uint8 (1 / 0 / 255 void).
        expression: Referring expression (normalised).
        out_size: Output ``(H, W)`` (the network input size).
        rng: Source of randomness.
        config: Augmentation settings.
        categories: (H0, W0) uint8 category map (:attr:`Sample.categories`), or ``None``.

    Returns:
        :class:`Augmented`, everything on the ``out_size`` grid.
    """
    h0, w0 = frame.shape[:2]
    if mask.shape != (h0, w0):
        raise ValueError(f"mask shape {mask.shape} differs from frame {frame.shape[:2]}")
    h, w = out_size
    flow = flow_to_grid(flow_px, (h0, w0))  # (H0, W0, 2) px of the frame grid
    s = float(rng.uniform(*config.scale))
    ch, cw = max(1, round(h0 / s)), max(1, round(w0 / s))
    y0 = int(rng.integers(0, h0 - ch + 1))
    x0 = int(rng.integers(0, w0 - cw + 1))
    frame = frame[y0 : y0 + ch, x0 : x0 + cw]
    mask = mask[y0 : y0 + ch, x0 : x0 + cw]
    flow = flow[y0 : y0 + ch, x0 : x0 + cw]
    frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    if categories is not None:
        categories = cv2.resize(categories[y0 : y0 + ch, x0 : x0 + cw], (w, h),
                                interpolation=cv2.INTER_NEAREST_EXACT)  # fmt: skip
    flow = flow_to_grid(np.ascontiguousarray(flow), (h, w))  # scales the vectors by w/cw, h/ch
    flipped = bool(rng.random() < config.hflip)
    if flipped:
        frame = frame[:, ::-1]
        mask = mask[:, ::-1]
        categories = None if categories is None else categories[:, ::-1]
        flow = flow[:, ::-1] * np.asarray([-1.0, 1.0], np.float32)  # mirror: dx -> -dx
        expression = swap_left_right(expression)
    frame = _colour_jitter(np.ascontiguousarray(frame), rng, config)
    return Augmented(
        frame=frame,
        flow=np.ascontiguousarray(flow, dtype=np.float32),
        mask=np.ascontiguousarray(mask),
        expression=expression,
        flipped=flipped,
        scale=s,
        categories=None if categories is None else np.ascontiguousarray(categories),
    )


class ReferringTorchDataset(torch.utils.data.Dataset):
    """Network-ready tensors from a sequence of :class:`~training.sample.Sample`.

    Args:
        samples: Any indexable sequence of samples (synthetic or a real dataset loader).
        tokenizer: The run's tokenizer.
        config: Model config (input size, normalisation, flow gain, text limits).
        augment: Augmentation, or ``None`` for evaluation (plain resize, as deployed).
        seed: Base seed of the per-item randomness.
        flow_preset: OpenCV DIS preset used when a sample carries no precomputed flow (the
            flow is then computed at the network input size, as the runtime does).

    Items are dicts of tensors: ``image`` (3, H, W) float32 normalised RGB, ``flow``
    (2, H, W) float32 normalised flow, ``token_ids`` (L,) int64, ``token_mask`` (L,) int64,
    ``target`` (1, H, W) float32 {0, 1}, ``valid`` (1, H, W) float32 {0, 1} (0 on void pixels)
    and ``index`` () int64. A model with the grounding prior (``config.prior``) also gets
    ``prior`` (1, H/32, W/32) float32, a simulated prior map, and ``prior_sim`` () float32,
    1 where the network should read it instead of its own: only augmented (training) samples
    that carry :attr:`Sample.categories`, with probability ``prior_sim`` (the rest keep the
    network's own prior, uninformative on synthetic frames, so the network also learns to
    ignore a prior that names nothing). A model with the referent input (``config.referent``)
    gets ``referent`` (1, H, W) float32: a simulated detector's map of the instance the
    phrase means (:func:`training.referent_sim.simulate_referent`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        tokenizer: PhraseTokenizer,
        config: HINetConfig,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        flow_preset: str = "ultrafast",
        prior_sim: float = 0.75,
    ) -> None:
        if len(samples) == 0:
            raise ValueError("dataset has no samples")
        self.samples = samples
        self.tokenizer = tokenizer
        self.config = config
        self.augment = augment
        self.seed = int(seed)
        self.flow_preset = flow_preset
        self.prior_sim = float(prior_sim)
        self.epoch = 0
        self._flow: OpticalFlow | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws :meth:`__getitem__` makes."""
        self.epoch = int(epoch)

    def _sample_flow(self, sample: Sample) -> np.ndarray:
        if sample.flow is not None:
            return sample.flow
        h, w = self.config.input_size
        if sample.prev_frame is None:
            return np.zeros((h, w, 2), np.float32)
        if self._flow is None:  # one per worker process (OpticalFlow is not thread-safe)
            self._flow = OpticalFlow(preset=self.flow_preset, size=(w, h))
        return self._flow.between(sample.prev_frame, sample.frame)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        size = self.config.input_size
        flow_px = self._sample_flow(sample)
        prior = None
        sim_rng, use_sim = None, False
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            expression = sample.expression
            if self.config.prior and sample.categories is not None:
                sim_rng, use_sim = self._prior_draw(index)
            # With a simulated prior, sometimes a real noun instead of the shape ("the red dog"):
            # only the prior then says which objects are of the named kind.
            noun = None
            if use_sim and rng.random() < self.augment.noun:
                noun = real_noun(rng)
            if sample.positions and sample.attributes and rng.random() < self.augment.spatial:
                position = sample.positions[int(rng.integers(len(sample.positions)))]
                expression = spatial_expression(sample.attributes["shape"], position, rng,
                                                noun=noun)  # fmt: skip
            elif sample.attributes and (noun is not None or rng.random() < self.augment.reword):
                expression = reword(sample.attributes, rng, noun=noun)
            aug = augment(
                sample.frame,
                flow_px,
                sample.mask,
                expression,
                out_size=size,
                rng=rng,
                config=self.augment,
                categories=sample.categories,
            )
            frame, flow_px, mask, expression = aug.frame, aug.flow, aug.mask, aug.expression
            if use_sim:  # simulated on the category map cropped and flipped like the frame
                prior = self._simulated(aug.categories, sim_rng)
        else:
            frame, mask, expression = sample.frame, sample.mask, sample.expression
            if mask.shape != tuple(size):
                mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)
        image = prepare_image(frame, size, self.config.image_mean, self.config.image_std)
        flow = prepare_flow(flow_px, size, self.config.flow_gain)
        text = self.config.text
        try:
            ids, tmask = self.tokenizer.encode(
                self.tokenizer.normalize(expression),
                max_tokens=text.max_tokens,
                max_chars=text.max_chars,
            )
        except ValueError as exc:
            raise ValueError(f"sample {index} ({sample.video_id}): {exc}: {expression!r}") from exc
        item = {
            "image": torch.from_numpy(image[0]),  # (3, H, W)
            "flow": torch.from_numpy(flow[0]),  # (2, H, W)
            "token_ids": torch.from_numpy(ids[0]),  # (L,)
            "token_mask": torch.from_numpy(tmask[0]),  # (L,)
            "target": torch.from_numpy((mask == 1).astype(np.float32)[None]),  # (1, H, W)
            "valid": torch.from_numpy((mask != VOID).astype(np.float32)[None]),  # (1, H, W)
            "index": torch.tensor(int(index), dtype=torch.int64),
        }
        if self.config.prior:
            item.update(prior if prior is not None else self._own_prior())
        if getattr(self.config, "referent", False):
            cats = aug.categories if self.augment is not None else sample.categories
            item["referent"] = torch.from_numpy(self._referent(index, mask, cats))
        return item

    def _referent(self, index: int, mask: np.ndarray, categories: np.ndarray | None) -> np.ndarray:
        """A simulated detector's referent map for this item (:mod:`training.referent_sim`).

        Validation items draw theirs from a fixed seed, so every validation sees the same maps.
        """
        epoch = self.epoch if self.augment is not None else -1
        rng = np.random.default_rng([self.seed, epoch + 1, int(index), 0x2EF])
        others = None
        if categories is not None:
            if categories.shape != mask.shape:
                categories = cv2.resize(categories, (mask.shape[1], mask.shape[0]),
                                        interpolation=cv2.INTER_NEAREST_EXACT)  # fmt: skip
            others = (categories == 2) | (categories == 3)
        return simulate_referent(mask == 1, others, rng)

    def _grid(self) -> tuple[int, int]:
        h, w = self.config.input_size
        return -(-h // 32), -(-w // 32)

    def _prior_draw(self, index: int) -> tuple[np.random.Generator, bool]:
        """This item's prior generator and whether its prior is simulated (``prior_sim``)."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index), 0x9A1])
        return rng, bool(rng.random() < self.prior_sim)

    def _simulated(self, categories: np.ndarray, rng: np.random.Generator) -> dict:
        prior = simulate_prior(categories, self._grid(), rng)
        return {"prior": torch.from_numpy(prior), "prior_sim": torch.tensor(1.0)}

    def _own_prior(self) -> dict[str, torch.Tensor]:
        """No simulated map: the network reads its own prior."""
        return {"prior": torch.zeros(1, *self._grid()), "prior_sim": torch.tensor(0.0)}


def trim_tokens(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut ``token_ids`` / ``token_mask`` to the batch's longest phrase.

    The exported graphs read ``max_tokens`` positions; in training the padding beyond the
    longest phrase only costs text-encoder time (masked attention ignores it either way).
    """
    n = int(batch["token_mask"].sum(dim=1).max())
    return {
        **batch,
        "token_ids": batch["token_ids"][:, :n],
        "token_mask": batch["token_mask"][:, :n],
    }
