"""One engine interface, several backends (torch, ONNX Runtime, TensorRT).

Every backend runs two graphs over name -> array mappings with the same names:

``text_encoder``: ``token_ids`` (B, L) int64, ``token_mask`` (B, L) int64 {0, 1}
    -> ``words`` (B, L, C) float32, ``words_mask`` (B, L) float32 {0, 1}, ``sentence`` (B, C) float32
``frame_net``: ``image`` (B, 3, H, W) float32 normalised, ``flow`` (B, 2, H, W) float32 normalised,
    ``words``, ``words_mask``, ``sentence`` -> ``logits`` (B, 1, H, W) float32

A model with the grounding prior (``config.prior``) has one more tensor between the two graphs:
``classes`` (B, 1000) float32, the phrase's weights over the ImageNet classes, and one more
frame output: ``prior_conf`` (B, 1) float32 in [0, 1], how strongly the frame shows those
classes. A model with the referent input (``config.referent``) reads one more frame input:
``referent`` (B, 1, H, W) float32 in [0, 1], the detected instance the phrase means as a map
(all zero: no sure instance). :func:`text_outputs`, :func:`frame_inputs` and
:func:`frame_outputs` give the names for a config.

This module imports no runtime (no torch, onnxruntime or tensorrt).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from engine.preprocess import check_input_size

__all__ = [
    "FRAME_INPUTS",
    "FRAME_OUTPUTS",
    "PRECISIONS",
    "TEXT_INPUTS",
    "TEXT_OUTPUTS",
    "BackendUnavailable",
    "Engine",
    "TextState",
    "frame_inputs",
    "frame_outputs",
    "text_outputs",
]

TEXT_INPUTS = ("token_ids", "token_mask")
TEXT_OUTPUTS = ("words", "words_mask", "sentence")
FRAME_INPUTS = ("image", "flow", "words", "words_mask", "sentence")
FRAME_OUTPUTS = ("logits",)
#: The extra text output / frame input of a model with the grounding prior.
PRIOR_TENSOR = "classes"
#: The extra frame output of a model with the grounding prior.
PRIOR_CONF = "prior_conf"
#: The extra frame input of a model with the referent input (``config.referent``).
REFERENT_TENSOR = "referent"
#: Its width: the ImageNet classes (one more, ``person``, with ``config.prior_person``).
PRIOR_CLASSES = 1000


def prior_classes(config: Any) -> int:
    """The width of ``classes`` for ``config``: 1000, or 1001 with the person class."""
    return PRIOR_CLASSES + (1 if getattr(config, "prior_person", False) else 0)


def text_outputs(config: Any) -> tuple[str, ...]:
    """The text encoder's output names for a model config."""
    return TEXT_OUTPUTS + ((PRIOR_TENSOR,) if getattr(config, "prior", False) else ())


def frame_inputs(config: Any) -> tuple[str, ...]:
    """The frame network's input names for a model config."""
    names = FRAME_INPUTS + ((PRIOR_TENSOR,) if getattr(config, "prior", False) else ())
    return names + ((REFERENT_TENSOR,) if getattr(config, "referent", False) else ())


def frame_outputs(config: Any) -> tuple[str, ...]:
    """The frame network's output names for a model config."""
    return FRAME_OUTPUTS + ((PRIOR_CONF,) if getattr(config, "prior", False) else ())


#: Precisions an engine can run.
PRECISIONS = ("fp32", "fp16", "int8")


class BackendUnavailable(RuntimeError):  # noqa: N818 (name used across the project)
    """The runtime a backend needs (torch, onnxruntime, TensorRT, pycuda, a GPU) is missing."""


@dataclass(frozen=True)
class TextState:
    """An encoded phrase, computed once per phrase change and reused for every frame.

    Attributes:
        phrase: The normalised phrase (lower-case, single spaces).
        words: (1, L, C) float32 word features.
        words_mask: (1, L) float32, 1 for real tokens, 0 for padding.
        sentence: (1, C) float32 sentence feature.
        classes: (1, 1000) float32 weights over the ImageNet classes for a model with the
            grounding prior, else ``None``.
    """

    phrase: str
    words: np.ndarray
    words_mask: np.ndarray
    sentence: np.ndarray
    classes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.words.ndim != 3 or self.words_mask.shape != self.words.shape[:2]:
            raise ValueError(
                f"bad text state shapes: words {self.words.shape}, mask {self.words_mask.shape}"
            )
        if self.sentence.shape != (self.words.shape[0], self.words.shape[2]):
            raise ValueError(f"bad sentence shape {self.sentence.shape}")
        if self.classes is not None and (
            self.classes.ndim != 2
            or self.classes.shape[0] != self.words.shape[0]
            or self.classes.shape[1] not in (PRIOR_CLASSES, PRIOR_CLASSES + 1)
        ):
            raise ValueError(f"bad classes shape {self.classes.shape}")

    def as_inputs(self) -> dict[str, np.ndarray]:
        """The frame_net text inputs by name (three, or four with ``classes``)."""
        out = {"words": self.words, "words_mask": self.words_mask, "sentence": self.sentence}
        if self.classes is not None:
            out[PRIOR_TENSOR] = self.classes
        return out


class Engine(abc.ABC):
    """A loaded model that encodes phrases and segments frames.

    Subclasses implement :meth:`run_text` and :meth:`run_frame` over name -> array mappings and
    set :attr:`backend`; the arrays they return are new (the caller owns them: no backend
    returns a view of a buffer it reuses). Construction validates the input size; :meth:`segment` validates
    shapes so a wrong-size input fails with a clear ``ValueError`` before reaching a runtime.

    Args:
        config: The model's :class:`models.config.HINetConfig`.
        tokenizer: A :class:`models.tokenizer.Tokenizer`.
        input_size: Network input ``(H, W)``, multiples of 32.
        precision: ``"fp32"`` or ``"fp16"``.
        device: Backend-specific device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    """

    backend: ClassVar[str] = "abstract"
    #: ``False`` switches a grounding-prior model's prior off for ablations (``--prior off``):
    #: the phrase then names no class (zero class weights, so a zero prior map).
    use_prior: bool = True

    def __init__(
        self,
        *,
        config: Any,
        tokenizer: Any,
        input_size: tuple[int, int],
        precision: str = "fp32",
        device: str = "cpu",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.config = config
        self.tokenizer = tokenizer
        self.input_size = check_input_size(input_size)
        self.precision = precision
        self.device = device

    # -- what backends implement ---------------------------------------------------------------
    @abc.abstractmethod
    def run_text(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the text encoder: :data:`TEXT_INPUTS` -> :data:`TEXT_OUTPUTS` (float32)."""

    @abc.abstractmethod
    def run_frame(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the frame network: :data:`FRAME_INPUTS` -> :data:`FRAME_OUTPUTS` (float32)."""

    def close(self) -> None:
        """Release runtime resources (sessions, contexts, buffers)."""

    # -- how load_engine builds one ----------------------------------------------------------------
    @classmethod
    def check_request(cls, *, device: str, precision: str, **options: Any) -> None:
        """Fail fast on a request this backend can never serve, before any loading or export.

        Raises:
            ValueError: an invalid combination (e.g. fp16 on a CPU-only backend).
            BackendUnavailable: the runtime is missing.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")

    @classmethod
    def load(
        cls,
        resolved: Any,
        *,
        device: str,
        precision: str,
        input_size: tuple[int, int],
        **options: Any,
    ) -> Engine:
        """Construct from a :class:`engine.loading.Resolved` (what :func:`load_engine` calls).

        Every backend implements it; a wrapper engine (one that holds another) does not.
        """
        raise NotImplementedError(f"{cls.__name__} is not built by load_engine")

    # -- the public API --------------------------------------------------------------------------
    def encode_text(self, phrase: str) -> TextState:
        """Tokenise and encode ``phrase`` once (raises ``ValueError`` if empty or too long)."""
        text = self.config.text
        norm = self.tokenizer.normalize(phrase)
        ids, mask = self.tokenizer.encode(
            norm, max_tokens=text.max_tokens, max_chars=text.max_chars
        )
        out = self.run_text({"token_ids": ids, "token_mask": mask})
        return TextState(
            phrase=norm,
            words=np.asarray(out["words"], np.float32),
            words_mask=np.asarray(out["words_mask"], np.float32),
            sentence=np.asarray(out["sentence"], np.float32),
            classes=self._classes(out),
        )

    def _classes(self, out: Mapping[str, np.ndarray]) -> np.ndarray | None:
        if PRIOR_TENSOR not in out:
            return None
        classes = np.asarray(out[PRIOR_TENSOR], np.float32)
        return classes if self.use_prior else np.zeros_like(classes)

    def segment(
        self,
        image: np.ndarray,
        flow: np.ndarray,
        text: TextState,
        referent: np.ndarray | None = None,
    ) -> np.ndarray:
        """Mask logits for one preprocessed frame.

        Args:
            image: (1, 3, H, W) float32 from :func:`engine.preprocess.prepare_image`.
            flow: (1, 2, H, W) float32 from :func:`engine.preprocess.prepare_flow`.
            text: From :meth:`encode_text`.
            referent: (1, 1, H, W) float32 in [0, 1], the referent map of a model with that
                input (:attr:`takes_referent`; ``None``: all zero, no sure instance); a model
                without it ignores the argument.

        Returns:
            (1, 1, H, W) float32 logits.
        """
        return self.segment_prior(image, flow, text, referent)[0]

    @property
    def takes_referent(self) -> bool:
        """Whether the frame network reads a referent map (``config.referent``)."""
        return bool(getattr(self.config, "referent", False))

    def segment_prior(
        self,
        image: np.ndarray,
        flow: np.ndarray,
        text: TextState,
        referent: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float | None]:
        """:meth:`segment` plus the grounding prior's confidence for this frame.

        Returns:
            ``(logits, prior_conf)``: (1, 1, H, W) float32 logits, and how strongly the frame
            shows the categories the phrase names, in [0, 1]; ``None`` for a model without the
            prior, or with the prior switched off (``use_prior=False``).
        """
        h, w = self.input_size
        if image.shape != (1, 3, h, w) or image.dtype != np.float32:
            raise ValueError(
                f"image must be (1, 3, {h}, {w}) float32 for this engine, "
                f"got {image.shape} {image.dtype}"
            )
        if flow.shape != (1, 2, h, w) or flow.dtype != np.float32:
            raise ValueError(
                f"flow must be (1, 2, {h}, {w}) float32 for this engine, "
                f"got {flow.shape} {flow.dtype}"
            )
        feeds = {"image": image, "flow": flow, **text.as_inputs()}
        if self.takes_referent:
            if referent is None:
                referent = np.zeros((1, 1, h, w), np.float32)
            if referent.shape != (1, 1, h, w) or referent.dtype != np.float32:
                raise ValueError(
                    f"referent must be (1, 1, {h}, {w}) float32 for this engine, "
                    f"got {referent.shape} {referent.dtype}"
                )
            feeds[REFERENT_TENSOR] = referent
        out = self.run_frame(feeds)
        logits = np.asarray(out["logits"], np.float32)
        if PRIOR_CONF not in out or text.classes is None or not np.any(text.classes):
            return logits, None
        return logits, float(np.clip(np.asarray(out[PRIOR_CONF], np.float32).reshape(-1)[0], 0, 1))

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"{type(self).__name__}({self.backend}, {self.precision}, {self.device}, {h}x{w})"
