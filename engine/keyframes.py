"""When the network runs: every frame, every N-th, or when the flow says the warp is no longer good.

Between keyframes the session moves the last probabilities with the optical flow
(:func:`warp_probabilities`) instead of running the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KeyframePolicy", "warp_probabilities"]


@dataclass(frozen=True)
class KeyframePolicy:
    """When the network runs; between keyframes the last probabilities are warped by the flow.

    The flow is computed on every frame anyway, so a frame between keyframes costs a remap
    instead of the frame network. A phrase change, a stream reset and the first frame are
    always keyframes.

    Attributes:
        every: Fixed policy: the network runs on every ``every``-th frame (1: every frame).
        adaptive: Adaptive policy instead: run the network when the warp can no longer be
            trusted: after ``max_interval`` frames, when the mean flow exceeds ``max_motion``
            of the flow grid's width per frame (a fast camera pan: large flow is where DIS
            errs), or when the warped mask's area leaves ``[1 / area_change, area_change]``
            times the keyframe's.
        max_interval: Adaptive: most frames between two keyframes.
        max_motion: Adaptive: mean flow magnitude, as a share of the grid width per frame, that
            forces one.
        area_change: Adaptive: mask-area ratio to the keyframe's that forces one.
    """

    every: int = 1
    adaptive: bool = False
    max_interval: int = 4
    max_motion: float = 0.05
    area_change: float = 1.15

    def __post_init__(self) -> None:
        if self.every < 1 or self.max_interval < 1:
            raise ValueError(f"every and max_interval must be >= 1, got {self.every}, "
                             f"{self.max_interval}")  # fmt: skip
        if self.max_motion <= 0 or self.area_change <= 1:
            raise ValueError("max_motion must be > 0 and area_change > 1")

    @classmethod
    def parse(cls, text: str) -> KeyframePolicy:
        """``"1"``, ``"3"`` (every 3rd frame) or ``"adaptive"``.

        Raises:
            ValueError: anything else (the message lists the forms).
        """
        value = str(text).strip().lower()
        if value == "adaptive":
            return cls(adaptive=True)
        if value.isdigit() and int(value) >= 1:
            return cls(every=int(value))
        raise ValueError(f"keyframes must be a period >= 1 or 'adaptive', got {text!r}")

    @property
    def always(self) -> bool:
        """Whether every frame is a keyframe (the network runs on all of them)."""
        return self.every == 1 and not self.adaptive

    def __str__(self) -> str:
        return "adaptive" if self.adaptive else str(self.every)


def warp_probabilities(prob_net: np.ndarray, flow_px: np.ndarray) -> np.ndarray:
    """The previous frame's (H, W) probabilities moved along the (h, w, 2) pixel flow.

    The flow is forward (previous -> current: a previous pixel ``s`` moves to ``s + f(s)``), so
    each value is splatted to the grid point nearest to where its pixel went, the highest
    winning where several land (a moving object covers the background it moves onto; sampling
    the flow at the destination instead would read the background's flow there and leave the
    object behind). Grid points nothing lands on (a stretch) take the value at ``x - f(x)``;
    what moves out of the frame is dropped.
    """
    import cv2

    h, w = prob_net.shape
    fh, fw = flow_px.shape[:2]
    flow = flow_px.astype(np.float32)
    if (fh, fw) != (h, w):
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow *= np.asarray([w / fw, h / fh], np.float32)
    prob = prob_net.astype(np.float32)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    xi = np.rint(gx + flow[..., 0]).astype(np.int64).ravel()
    yi = np.rint(gy + flow[..., 1]).astype(np.int64).ravel()
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    target = yi[ok] * w + xi[ok]
    out = np.zeros(h * w, np.float32)
    np.maximum.at(out, target, prob.ravel()[ok])
    hit = np.zeros(h * w, bool)
    hit[target] = True
    if not hit.all():
        back = cv2.remap(prob, gx - flow[..., 0], gy - flow[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)  # fmt: skip
        out[~hit] = back.ravel()[~hit]
    return out.reshape(h, w)
