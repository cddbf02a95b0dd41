"""A streaming segmentation session over an :class:`engine.base.Engine` (SAM-style API).

``set_phrase(text)`` encodes the phrase once; ``step(frame)`` segments one frame using the cached
text and the previous frame (for optical flow). The two halves of ``step`` are public so the
pipeline runs the same code in its flow and inference stages: :meth:`Segmenter.prepare` (grey
frame, optical flow against the previous frame, network inputs) and :meth:`Segmenter.infer`
(frame network, then :func:`engine.preprocess.postprocess`: probabilities, optional temporal
smoothing, threshold). :meth:`Segmenter.observe` feeds a frame to the flow state alone (the
previous frame of an evaluation sample). The session keeps no clock: stage times are stamped
by :mod:`engine.pipeline` only.

Example::

    seg = Segmenter(engine, threshold=0.5, smoothing=0.3)
    seg.set_phrase("the red car moving left")
    for frame in source:
        result = seg.step(frame)       # result.mask (H, W) bool
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from engine.base import Engine, TextState
from engine.flow import OpticalFlow
from engine.instances import InstanceEvidence, fuse
from engine.keyframes import KeyframePolicy, warp_probabilities
from engine.preprocess import postprocess, prepare_flow, prepare_image, sanitize_frame
from engine.sources import Frame

__all__ = [
    "FlowState",
    "KeyframePolicy",
    "PhraseNotSetError",
    "PreparedFrame",
    "Result",
    "Segmenter",
    "SmoothingState",
]


#: Default :attr:`Segmenter.min_score`: the highest score that keeps 95 % of the frames showing
#: the referent found, for the shipped model on validation clips (``python -m
#: training.not_found``; ``docs/TRAINING.md``, "Not found").
DEFAULT_MIN_SCORE = 0.61
#: Default :attr:`Segmenter.min_prior`: a model with the grounding prior calls the referent not
#: found when the frame barely shows the categories the phrase names (its ``prior_conf``
#: below this), calibrated on real clips no benchmark scores and REAL_WORLD.md allows (opencv-doc's
#: Megamind.avi and tree.avi: ``python -m benchmarks.real_not_found``; ``docs/TRAINING.md``, "Not
#: found on real footage"). 0.32 before 2026-12-07, when the calibration also used vtest.avi.
DEFAULT_MIN_PRIOR = 0.39


class PhraseNotSetError(RuntimeError):
    """:meth:`Segmenter.step` / :meth:`Segmenter.infer` was called before a phrase was set."""


@dataclass(frozen=True)
class Result:
    """The segmentation of one frame.

    Attributes:
        mask: (H, W) bool at the frame's resolution.
        prob: (H, W) float32 in [0, 1], the (smoothed) object probability.
        score: Mean probability over the mask's pixels in [0, 1] (0.0 for an empty mask).
        peak: The highest probability in the frame, in [0, 1].
        found: Whether the referent is probably in view (:attr:`Segmenter.min_score`, and
            :attr:`Segmenter.min_prior` for a model with the grounding prior); when not, the
            stream draws no mask and says "not found".
        prior_conf: The grounding prior's confidence in [0, 1] that the frame shows what the
            phrase names (the last keyframe's between keyframes); ``None`` for a model without
            the prior or with it switched off.
        instances: With instance evidence (:class:`engine.instances.InstanceEvidence`), the
            best-scored instances of the phrase's class (class, box, score and its parts,
            ``chosen``); empty without it.
        steered: The chosen instance steered the mask (:func:`engine.instances.fuse`).
        absent: Why the evidence says the referent is not in view ("no dog in view": the phrase
            names a COCO class, no instance of it is in view, and the grounding prior, where
            the model has one, is not sure of it either); ``None`` otherwise.
        inferred: Whether the network ran on this frame (a keyframe); ``False`` when its
            probabilities are the previous frame's warped by the optical flow
            (:class:`KeyframePolicy`).
        frame_index: The source frame's sequence number.
        capture_time: The frame's monotonic capture time (seconds).
        phrase: The normalised phrase this frame was segmented with.
        timings: Stage name -> milliseconds, filled by :mod:`engine.pipeline` (the stages of
            :data:`engine.latency.STAGES`); empty for a plain :meth:`Segmenter.step`.
    """

    mask: np.ndarray
    prob: np.ndarray
    score: float
    frame_index: int
    capture_time: float
    phrase: str
    timings: dict[str, float] = field(default_factory=dict)
    peak: float = 0.0
    found: bool = True
    inferred: bool = True
    prior_conf: float | None = None
    instances: tuple[dict, ...] = ()
    steered: bool = False
    absent: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mask, np.ndarray) or self.mask.ndim != 2 or self.mask.dtype != bool:
            raise ValueError(
                f"mask must be (H, W) bool, got {getattr(self.mask, 'shape', None)} "
                f"{getattr(self.mask, 'dtype', type(self.mask))}"
            )
        if not isinstance(self.prob, np.ndarray) or self.prob.shape != self.mask.shape:
            raise ValueError(
                f"prob must match mask shape {self.mask.shape}, got "
                f"{getattr(self.prob, 'shape', type(self.prob))}"
            )
        if self.prob.dtype != np.float32:
            raise ValueError(f"prob must be float32, got {self.prob.dtype}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")
        if not 0.0 <= self.peak <= 1.0:
            raise ValueError(f"peak must be in [0, 1], got {self.peak}")
        if self.prior_conf is not None and not 0.0 <= self.prior_conf <= 1.0:
            raise ValueError(f"prior_conf must be in [0, 1], got {self.prior_conf}")
        if self.frame_index < 0:
            raise ValueError(f"frame_index must be >= 0, got {self.frame_index}")
        if any(v < 0 for v in self.timings.values()):
            raise ValueError(f"timings must be non-negative, got {self.timings}")

    @property
    def area(self) -> float:
        """Fraction of the frame covered by the mask, in [0, 1]."""
        return float(self.mask.mean())

    @property
    def shown_mask(self) -> np.ndarray:
        """The mask to draw: :attr:`mask` when :attr:`found`, else an empty one."""
        return self.mask if self.found else np.zeros_like(self.mask)


@dataclass(frozen=True)
class PreparedFrame:
    """Output of the flow stage, input of the inference stage.

    Attributes:
        frame: The source frame.
        image: (1, 3, H, W) float32 network image input.
        flow: (1, 2, H, W) float32 network flow input.
        flow_px: (h, w, 2) float32 pixel flow from the previous frame on the flow grid
            (``None``: none computed, e.g. the first frame).
    """

    frame: Frame
    image: np.ndarray
    flow: np.ndarray
    flow_px: np.ndarray | None = None


@dataclass
class FlowState:
    """Temporal state of the flow stage: the previous frame in grey at the flow size."""

    prev_gray: np.ndarray | None = None
    prev_index: int = -1
    prev_time: float = 0.0


@dataclass
class SmoothingState:
    """Temporal state of the inference stage.

    ``ema``: the previous frame's probabilities at network size (smoothed, or warped on a frame
    between keyframes); ``since_key``: frames since the last keyframe (-1: none yet);
    ``key_area``: the share of the network grid the last keyframe's mask covered;
    ``prior_conf``: the last keyframe's grounding-prior confidence.
    """

    ema: np.ndarray | None = None
    since_key: int = -1
    key_area: float = 0.0
    prior_conf: float | None = None


class Segmenter:
    """Phrase-conditioned video segmentation, one frame at a time.

    Args:
        engine: A loaded :class:`engine.base.Engine` (any backend).
        flow_preset: Optical-flow preset (see :data:`engine.flow.FLOW_PRESETS`).
        flow_size: ``(width, height)`` the flow is computed at; defaults to the network input
            size (``engine.input_size`` reversed).
        threshold: Probability threshold in (0, 1) for the mask.
        smoothing: Temporal EMA weight of the PREVIOUS probabilities in [0, 1):
            ``p_t = smoothing * p_{t-1} + (1 - smoothing) * p``; 0 disables smoothing.
        max_flow_gap: Seconds between two frames' capture times above which their flow is
            meaningless (a stream reconnected): the frame gets zero flow, like a first frame.
            ``None`` never resets.
        min_score: A frame's referent counts as found when its mask is not empty and its
            score (mean probability inside the mask) is at least this; 0 always "finds" a
            non-empty mask. The default comes from the calibration in ``docs/TRAINING.md``.
        min_prior: With a grounding-prior model, the referent also needs the prior's
            confidence (:attr:`Result.prior_conf`) at least this to count as found: a phrase
            naming a category the frame does not show ("the dog" on a street) is not found even
            where the network draws a confident mask. 0 disables it; ignored without the prior.
        keyframes: When the network runs (:class:`KeyframePolicy`; default: every frame).
        instances: COCO-80 instance evidence: the instance the phrase means steers the mask
            (:func:`engine.instances.fuse`); ``None``: HINet alone.

    Thread-safety: :meth:`prepare` may run in one thread and :meth:`infer` in another (they
    touch disjoint state); :meth:`set_phrase` may be called from any thread and takes effect
    from the next :meth:`infer`.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        flow_preset: str = "ultrafast",
        flow_size: tuple[int, int] | None = None,
        threshold: float = 0.5,
        smoothing: float = 0.0,
        max_flow_gap: float | None = 2.0,
        min_score: float = DEFAULT_MIN_SCORE,
        min_prior: float = DEFAULT_MIN_PRIOR,
        keyframes: KeyframePolicy | None = None,
        instances: InstanceEvidence | None = None,
    ) -> None:
        self.keyframes = keyframes or KeyframePolicy()
        self.instances = instances
        if not 0.0 <= min_score < 1.0:
            raise ValueError(f"min_score must be in [0, 1), got {min_score}")
        self.min_score = float(min_score)
        if not 0.0 <= min_prior < 1.0:
            raise ValueError(f"min_prior must be in [0, 1), got {min_prior}")
        self.min_prior = float(min_prior)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.engine = engine
        self.threshold = float(threshold)
        self.smoothing = float(smoothing)
        if max_flow_gap is not None and max_flow_gap <= 0:
            raise ValueError(f"max_flow_gap must be positive or None, got {max_flow_gap}")
        self.max_flow_gap = max_flow_gap
        h, w = engine.input_size
        self.flow = OpticalFlow(preset=flow_preset, size=flow_size or (w, h))
        self.flow_state = FlowState()
        self.smoothing_state = SmoothingState()
        self._text: TextState | None = None
        self._text_lock = threading.Lock()
        self._raw_index = 0

    # -- the phrase --------------------------------------------------------------------------
    @property
    def phrase(self) -> str | None:
        """The current normalised phrase, or ``None`` before :meth:`set_phrase`."""
        text = self._text
        return text.phrase if text is not None else None

    def set_phrase(self, text: str) -> TextState:
        """Encode ``text`` once and use it from the next frame on.

        Raises:
            ValueError: the phrase is not a string, empty or too long; the previous phrase stays
                in use.
        """
        if not isinstance(text, str):
            raise ValueError(f"phrase must be a string, got {type(text).__name__}")
        state = self.engine.encode_text(text)  # raises ValueError before anything changes
        return self.use_text(state)

    def use_text(self, state: TextState) -> TextState:
        """Use a phrase already encoded by this session's engine (several streams, one phrase)."""
        with self._text_lock:
            self._text = state
            # A new referent: the old probabilities must not bleed into the new phrase's mask.
            self.smoothing_state = SmoothingState()
            if self.instances is not None:
                self.instances.set_phrase(state.phrase)
        return state

    # -- the stages ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the previous frame and the smoothing state (e.g. after a stream reconnect)."""
        self.flow_state = FlowState()
        with self._text_lock:
            self.smoothing_state = SmoothingState()
            if self.instances is not None:
                self.instances.reset()

    def _as_frame(self, frame: Frame | np.ndarray) -> Frame:
        if isinstance(frame, Frame):
            return frame
        frame = Frame(sanitize_frame(frame), self._raw_index, time.monotonic())
        self._raw_index += 1
        return frame

    def _advance(self, frame: Frame) -> np.ndarray | None:
        """Grey the frame, return its (h, w, 2) pixel flow from the previous one, keep it.

        ``None`` when there is no usable previous frame (first frame, reset, size change, gap).
        """
        gray = self.flow.gray(frame.image)  # (h, w) uint8
        state = self.flow_state
        stale = (
            self.max_flow_gap is not None and frame.timestamp - state.prev_time > self.max_flow_gap
        )
        if state.prev_gray is None or state.prev_gray.shape != gray.shape or stale or frame.cut:
            flow_px = None
        else:
            flow_px = self.flow(state.prev_gray, gray)  # (h, w, 2) px
        self.flow_state = FlowState(gray, frame.index, frame.timestamp)
        return flow_px

    def observe(self, frame: Frame | np.ndarray) -> None:
        """Make ``frame`` the previous frame of the next :meth:`prepare`, without segmenting it."""
        frame = self._as_frame(frame)
        self.flow_state = FlowState(self.flow.gray(frame.image), frame.index, frame.timestamp)

    def prepare(self, frame: Frame | np.ndarray) -> PreparedFrame:
        """Flow stage: optical flow against the previous frame and the network inputs.

        The first frame (or the first after :meth:`reset`, or after a capture gap longer than
        ``max_flow_gap``) gets zero flow.

        Args:
            frame: A :class:`Frame`, or a raw image (any layout :func:`sanitize_frame` takes).

        Returns:
            The frame with its (1, 3, H, W) image and (1, 2, H, W) flow inputs.
        """
        frame = self._as_frame(frame)
        cfg = self.engine.config
        flow_px = self._advance(frame)
        size = self.engine.input_size
        image = prepare_image(frame.image, size, cfg.image_mean, cfg.image_std)  # (1, 3, H, W)
        grid = flow_px
        if grid is None:  # zero flow, like a still camera
            w, h = self.flow.size
            grid = np.zeros((h, w, 2), np.float32)
        flow = prepare_flow(grid, size, cfg.flow_gain)  # (1, 2, H, W)
        return PreparedFrame(frame, image, flow, flow_px)

    def infer(self, prepared: PreparedFrame) -> Result:
        """Inference stage: frame network and :func:`engine.preprocess.postprocess`.

        Raises:
            PhraseNotSetError: no phrase was set yet.
        """
        with self._text_lock:
            text = self._text
            smooth = self.smoothing_state
            cues = self.instances.cues if self.instances is not None else None  # text's own
        if text is None:
            raise PhraseNotSetError("no phrase set: call set_phrase(text) before step()/infer()")
        frame_hw = prepared.frame.image.shape[:2]
        if prepared.frame.cut:  # a looped file starts again: nothing carries over the cut
            with self._text_lock:
                smooth = self.smoothing_state = SmoothingState()
            if self.instances is not None:
                self.instances.reset()
        view = None
        if self.instances is not None:  # before the network: a referent model reads its map
            view = self.instances.update(prepared.frame.image, prepared.flow_px, cues)
        warped = self._warped(prepared, smooth)
        if warped is not None:
            smooth.ema, prob, mask = postprocess(_logit(warped), frame_hw, threshold=self.threshold)
            smooth.since_key += 1
        else:
            referent = None
            if view is not None and self.engine.takes_referent:
                referent = view.referent_map(self.engine.input_size)
            logits, smooth.prior_conf = self.engine.segment_prior(
                prepared.image, prepared.flow, text, referent
            )  # (1, 1, H, W), float | None
            smooth.ema, prob, mask = postprocess(
                logits, frame_hw, threshold=self.threshold, previous=smooth.ema,
                smoothing=self.smoothing,
            )  # fmt: skip
            smooth.since_key, smooth.key_area = 0, float((smooth.ema > self.threshold).mean())
        if view is not None:
            prob, mask = fuse(prob, mask, view)
        score = min(max(float(prob[mask].mean()) if mask.any() else 0.0, 0.0), 1.0)
        prior_conf = smooth.prior_conf
        in_view = prior_conf is None or prior_conf >= self.min_prior
        found = bool(mask.any()) and score >= self.min_score and in_view
        steered = view is not None and view.confident
        if steered:  # a detected instance of the named class
            found = bool(mask.any())
        # Not in view: no instance of the named COCO class, and no class evidence either (the
        # prior, where the model has one, doubts it too): the detector misses small things and
        # parts ("the tie", "the car window") that the prior still sees.
        prior_sure = prior_conf is not None and prior_conf >= self.min_prior
        absent = view.absent if view is not None and not prior_sure else None
        if absent is not None:
            found = False
        return Result(
            mask=mask,
            prob=prob,
            score=score,
            peak=float(prob.max()),
            found=found,
            prior_conf=prior_conf,
            instances=tuple(view.as_rows()) if view is not None else (),
            steered=steered,
            absent=absent,
            frame_index=prepared.frame.index,
            capture_time=prepared.frame.timestamp,
            phrase=text.phrase,
            inferred=warped is None,
        )

    def _warped(self, prepared: PreparedFrame, smooth: SmoothingState) -> np.ndarray | None:
        """This frame's probabilities warped from the previous one, or ``None``: run the network."""
        policy = self.keyframes
        if policy.always or smooth.ema is None or smooth.since_key < 0 or prepared.flow_px is None:
            return None
        flow_px = prepared.flow_px
        if not policy.adaptive:
            return None if smooth.since_key + 1 >= policy.every else warp_probabilities(
                smooth.ema, flow_px)  # fmt: skip
        if smooth.since_key + 1 >= policy.max_interval:
            return None
        if float(np.linalg.norm(flow_px, axis=2).mean()) > policy.max_motion * flow_px.shape[1]:
            return None
        warped = warp_probabilities(smooth.ema, flow_px)
        area = float((warped > self.threshold).mean())
        if smooth.key_area > 0:
            ratio = area / smooth.key_area
            if not 1.0 / policy.area_change <= ratio <= policy.area_change:
                return None
        elif area > 0:  # the keyframe found nothing, the warp cannot add an object
            return None
        return warped

    def step(self, frame: Frame | np.ndarray) -> Result:
        """Segment one frame with the cached phrase and the previous frame.

        Raises:
            PhraseNotSetError: :meth:`set_phrase` was never called.
        """
        if self._text is None:
            raise PhraseNotSetError("no phrase set: call set_phrase(text) before step()")
        return self.infer(self.prepare(frame))


def _logit(prob: np.ndarray) -> np.ndarray:
    """Probabilities -> logits (clipped away from 0 and 1), for :func:`postprocess`."""
    p = np.clip(prob, 1e-6, 1.0 - 1e-6)
    return np.log(p / (1.0 - p)).astype(np.float32)
