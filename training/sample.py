"""The one sample type every dataset (synthetic or real) yields."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VOID", "Sample"]

#: Mask value for pixels excluded from metrics and loss (DAVIS "void").
VOID = 255


@dataclass
class Sample:
    """One (expression, annotated frame, referred object) sample.

    Attributes:
        frame: (H, W, 3) uint8 BGR, the annotated frame.
        prev_frame: (H, W, 3) uint8 BGR, the frame before it, or ``None`` for a video's first
            frame (then flow is zero).
        flow: (h, w, 2) float32 pixel flow prev -> frame if precomputed (from
            :class:`engine.flow.OpticalFlow`), else ``None`` (compute it from ``prev_frame``).
        expression: Referring expression, lower-cased and whitespace-normalised.
        mask: (H, W) uint8: 1 referred object, 0 background, :data:`VOID` ignored.
        dataset: Dataset name, e.g. ``"synthetic"``, ``"a2d"``, ``"jhmdb"``, ``"davis17"``,
            ``"ytvos"``.
        video_id: Video identifier within the dataset.
        frame_index: 0-based index of ``frame`` in its video.
        object_id: Identifier of the referred object/instance within the video.
        split: Dataset split or subset, e.g. ``"train"``, ``"test"``, ``"appearance"``,
            ``"motion"``.
        attributes: Synthetic data only: the canonical attributes the expression mentions
            (``shape`` and any of ``size``, ``colour``, ``motion``), from which training may
            word the referent in other ways (:mod:`training.synthetic.wording`); else ``None``.
        categories: Synthetic data only: (H, W) uint8 map of what an ImageNet head would see
            as categories: 1 the referred object, 2 other objects of its category (its shape),
            3 objects of other categories, 0 background; from it training simulates the
            grounding prior (:func:`models.grounding.simulate_prior`). Else ``None``.
        positions: Synthetic data only: the positions (``left``, ``right``, ``top``,
            ``bottom``) that single the referent out among the objects of its shape in this
            frame (:func:`training.synthetic.spatial.positions`), for spatial wordings.
    """

    frame: np.ndarray
    prev_frame: np.ndarray | None
    flow: np.ndarray | None
    expression: str
    mask: np.ndarray
    dataset: str
    video_id: str
    frame_index: int
    object_id: str
    split: str = ""
    attributes: dict[str, str] | None = None
    categories: np.ndarray | None = None
    positions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.frame.ndim != 3 or self.frame.shape[2] != 3 or self.frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be (H, W, 3) uint8, got {self.frame.shape} {self.frame.dtype}"
            )
        if self.mask.shape != self.frame.shape[:2] or self.mask.dtype != np.uint8:
            raise ValueError(
                f"mask must be {self.frame.shape[:2]} uint8, got {self.mask.shape} {self.mask.dtype}"
            )
        if self.prev_frame is not None and self.prev_frame.shape != self.frame.shape:
            raise ValueError("prev_frame and frame differ in shape")
        if self.flow is not None and (self.flow.ndim != 3 or self.flow.shape[2] != 2):
            raise ValueError(f"flow must be (h, w, 2), got {self.flow.shape}")
        if self.categories is not None and (
            self.categories.shape != self.frame.shape[:2] or self.categories.dtype != np.uint8
        ):
            raise ValueError(f"categories must be {self.frame.shape[:2]} uint8")
        if not self.expression.strip():
            raise ValueError("expression is empty")
