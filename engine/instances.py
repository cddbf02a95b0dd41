"""Instance evidence in the stream: which detected instance the phrase means, frame by frame.

:class:`InstanceEvidence` runs the COCO-80 :class:`~engine.detector.Detector` on every
``every``-th frame and carries its boxes between with the optical flow the session already
computes (each box moves by the median flow inside it). Every frame it scores the instances
against the phrase's cues (:mod:`engine.grounding`) and chooses the referent(s).

With ``background=True`` (the stream's way) the detector runs in its own thread, off the frame's
path: a frame asks for detections when the thread is free and it is time, and keeps using the
boxes it has; when the answer for frame ``k`` comes back at frame ``n``, its boxes are moved by
the flows of frames ``k+1..n`` (kept for that) and replace the carried ones. So a frame never
waits for the detector, and the boxes are as fresh as it allows; only the stream's first frame
(and the first after a reset) waits for its own detections. The thread runs one of the
detector's two scales a round, in turn (:func:`~engine.detector_thread.one_scale_a_round`): a
box found at one scale only is held until that scale comes round again.

The chosen instance reaches HINet twice. A model with the referent input (``config.referent``,
the shipped default) reads it as a map (:meth:`InstanceView.referent_map`) at every pyramid
level before the motion gate, and draws that object's pixels from its box. After the network,
:func:`fuse` lets the chosen instance decide *where* and HINet *which pixels*: HINet's
probabilities are kept inside the chosen boxes and damped outside; where HINet marks almost
nothing of a confidently detected instance, the box's centre part stands in. A phrase whose
head noun names no COCO class ("the tree"), or a frame without a confident instance of it,
gives an all-zero map (the network then computes exactly what it would without the input) and
leaves HINet's mask as it is.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from engine.detector import COCO_CLASSES, Detections, Detector
from engine.detector_thread import DetectorThread, one_scale_a_round, timed
from engine.grounding import (
    Cues,
    InstanceScore,
    choose,
    parse_phrase,
    referent_map,
    score_instances,
)

__all__ = ["ABSENT_BELOW", "DEFAULT_EVERY", "InstanceEvidence", "InstanceView", "fuse"]

#: Ask the detector for every this-many-th frame by default (the stream, the app). A stream's
#: round runs one of the detector's two scales in turn, about 1.3x what the single 416 pass
#: cost (measured in the main job: 132 vs 103 ms p50): one round in 6 frames keeps the
#: detector's share of the CPU where one in 5 had it.
DEFAULT_EVERY = 6

#: The chosen instance's class probability below which it does not steer the mask (NanoDet's
#: own demo draws boxes from 0.35; set a priori, not tuned on any benchmark).
MIN_CONFIDENCE = 0.4
#: A phrase naming a COCO class is "not in view" when no instance has that class's probability
#: at least this (under NanoDet's own 0.35 drawing threshold, so a doubtful instance still
#: counts as there; set a priori, not tuned on any benchmark).
ABSENT_BELOW = 0.25
#: Outside the chosen boxes HINet's probabilities are multiplied by this.
OUTSIDE = 0.15
#: A carried instance that a new detection round does not find again (no box of its class
#: overlaps it at IoU >= :data:`HOLD_IOU`) is kept, still following the flow, for this many
#: more rounds: a walker behind a lamp post or a sign stays the referent instead of the phrase
#: jumping to someone else for a moment.
#: At least 2: in the stream a box found at one detector scale only must outlive the other
#: scale's round (:func:`~engine.detector_thread.one_scale_a_round`).
HOLD_ROUNDS = 2
HOLD_IOU = 0.3
#: A fresh box at least this probable takes a carried identity before the doubtful ones do
#: (ByteTrack's high-score threshold, set a priori).
SURE = 0.5


@dataclass(frozen=True)
class InstanceView:
    """The instances of one frame as the phrase sees them.

    Attributes:
        detections: The frame's instances (detected now, or carried by the flow).
        scores: Every instance the phrase's class allows, best first.
        chosen: The instances the phrase means (one, or several for a plural).
        detected: Whether the detector ran on this frame.
        cues: The phrase's cues.
        ids: Each detection's identity: kept while the detector finds it again where the flow
            carried it (same class, IoU >= :data:`HOLD_IOU`), and while it is held; new ones
            count up (empty: none given).
    """

    detections: Detections
    scores: list[InstanceScore]
    chosen: list[InstanceScore]
    detected: bool
    cues: Cues = field(repr=False)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @property
    def confident(self) -> bool:
        """Whether the chosen instance is sure enough to steer the mask.

        Only its class counts: the other words rank the instances against each other (the
        colour names of real clothes are rough, "the light blue coat" reads as grey), so a
        choice whose colour or position part is low is still the best one in view.
        """
        return bool(self.chosen) and self.confidence >= MIN_CONFIDENCE

    @property
    def confidence(self) -> float:
        """The chosen instance's probability of the class the phrase names."""
        if not self.chosen:
            return 0.0
        i = self.chosen[0].index
        return float((self.detections.probs[i] * self.cues.classes).max())

    @property
    def absent(self) -> str | None:
        """``"no dog in view"`` when the phrase names a COCO class no instance shows, else ``None``."""
        if not self.cues.names_a_class:
            return None
        dets = self.detections
        named = self.cues.classes > 0  # any class the head noun names ("van": truck or car)
        if len(dets) and float(dets.probs[:, named].max()) >= ABSENT_BELOW:
            return None
        name = COCO_CLASSES[int(np.argmax(self.cues.classes))]
        return f"no {name} in view"

    def referent_map(self, size: tuple[int, int]) -> np.ndarray | None:
        """(1, 1, H, W) float32 map of the chosen instances at ``size`` (a network input's).

        ``None`` unless the choice is :attr:`confident`: a doubtful instance does not steer
        the mask, in the network or after it (:func:`fuse`).
        """
        if not self.confident:
            return None
        return referent_map(self.detections, self.chosen, size)[None, None]

    def as_rows(self, top: int = 5) -> list[dict]:
        """The JSON form of the best ``top`` instances (``chosen`` marked)."""
        chosen = {s.index for s in self.chosen}
        rows = []
        for s in self.scores[:top]:
            row = s.as_dict()
            row["box"] = [round(float(v), 1) for v in self.detections.boxes[s.index]]
            row["id"] = int(self.ids[s.index]) if len(self.ids) else None
            row["chosen"] = s.index in chosen
            rows.append(row)
        return rows


class InstanceEvidence:
    """The detector on every ``every``-th frame, its boxes carried by the flow in between.

    Args:
        detector: The COCO-80 detector (default: a new one, one ONNX Runtime thread).
        every: Ask for detections on every ``every``-th frame (1: every frame).
        background: Run the detector in its own thread (see the module's text); otherwise in
            :meth:`update`, on the frame itself.

    :meth:`update` belongs to one thread (a stream's inference stage); :meth:`set_phrase` and
    :meth:`reset` may come from others.
    """

    def __init__(
        self,
        detector: Detector | None = None,
        *,
        every: int = DEFAULT_EVERY,
        background: bool = False,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.detector = detector or Detector(threads=1)
        self.every = int(every)
        self.cues: Cues | None = None
        self._dets: Detections | None = None
        self._since = 0
        self._ages = np.zeros(0, np.int64)  # detector rounds each instance has been held for
        self._ids = np.zeros(0, np.int64)  # each instance's identity (InstanceView.ids)
        self._next_id = 1
        self._stale = False
        self._closed = False
        self._seq = 0  # frames seen since the last reset
        self._flows: deque[tuple[int, np.ndarray | None]] = deque(maxlen=4 * self.every + 32)
        #: Milliseconds of the detector's recent runs (either thread), for the stream's report.
        self.detector_ms: deque[float] = deque(maxlen=512)
        # the detector, timed; the thread gets its function, never self (dropping self stops it)
        self._detect = timed(self.detector, self.detector_ms)
        self._worker: DetectorThread | None = None
        if background:
            self._worker = DetectorThread(timed(one_scale_a_round(self.detector),
                                                  self.detector_ms))  # fmt: skip
            weakref.finalize(self, self._worker.close)

    def report(self) -> dict[str, float | int | bool]:
        """The detector's cost for a stream's summary: runs, p50/p95 ms, every, background."""
        ms = np.asarray(self.detector_ms, np.float64)
        return {
            "runs": int(ms.size),
            "p50_ms": float(np.percentile(ms, 50)) if ms.size else float("nan"),
            "p95_ms": float(np.percentile(ms, 95)) if ms.size else float("nan"),
            "every": self.every,
            "background": self.background,
        }

    @property
    def background(self) -> bool:
        """Whether the detector runs in its own thread."""
        return self._worker is not None

    def close(self) -> None:
        """Stop the detector thread (if any); :meth:`update` raises after."""
        self._closed = True
        if self._worker is not None:
            self._worker.close()

    def set_phrase(self, phrase: str) -> Cues:
        """Read the phrase's cues (the detections stay: they do not depend on the phrase)."""
        self.cues = parse_phrase(phrase)
        return self.cues

    def reset(self) -> None:
        """Forget the carried detections (a new stream, a reconnect) from the next frame on.

        Safe from another thread than :meth:`update`'s: only a flag is set here.
        """
        self._stale = True

    def update(
        self, frame: np.ndarray, flow_px: np.ndarray | None, cues: Cues | None = None
    ) -> InstanceView | None:
        """This frame's view (``None`` until a phrase is set).

        Args:
            frame: (H, W, 3) uint8 BGR.
            flow_px: (h, w, 2) pixel flow from the previous frame at its own grid (``None``:
                none; the boxes stay where they were).
            cues: The phrase's cues as the caller read them with its phrase (one frame, one
                phrase); default: the last :meth:`set_phrase`'s.

        Raises:
            RuntimeError: called after :meth:`close` (a closed stream's evidence would only
                carry its old boxes, never detecting again).
            Exception: whatever the detector raised (in the background: on the next frame).
        """
        if self._closed:
            raise RuntimeError("this InstanceEvidence is closed (its stream ended); make a new one")
        cues = cues or self.cues  # set_phrase may swap it from another thread: one read per frame
        if cues is None:
            return None
        if self._stale:
            self._dets, self._stale = None, False
            self._flows.clear()
            if self._worker is not None:
                self._worker.forget()
        h, w = frame.shape[:2]
        if self._dets is not None and self._dets.frame_hw != (h, w):
            self._dets = None
        if self._worker is None:
            detected = self._dets is None or self._since + 1 >= self.every
            if detected:
                self._dets, self._since = self._renewed(self._detect(frame)), 0
            else:
                self._dets, self._since = _carried(self._dets, flow_px), self._since + 1
        else:
            detected = self._background_step(frame, flow_px)
        dets = self._dets if self._dets is not None else Detections.empty((h, w))
        ids = self._ids if self._dets is not None else np.zeros(0, np.int64)
        scores = score_instances(dets, cues, frame, flow_px)
        return InstanceView(dets, scores, choose(scores, cues), detected, cues, ids)

    def _new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return ids

    def _renewed(self, fresh: Detections) -> Detections:
        """A new round's detections plus the carried ones it lost (see :data:`HOLD_ROUNDS`)."""
        old, ages = self._dets, self._ages
        if old is None or not len(old) or old.frame_hw != fresh.frame_hw:
            self._ages, self._ids = np.zeros(len(fresh), np.int64), self._new_ids(len(fresh))
            return fresh
        iou = _iou(old.boxes, fresh.boxes)
        iou[old.classes[:, None] != fresh.classes[None, :]] = 0.0
        lost = ~(iou >= HOLD_IOU).any(axis=1) & (ages < HOLD_ROUNDS)
        # Identities: one to one, the sure fresh boxes first (ByteTrack's two stages: a doubtful
        # duplicate of a walker must not take her id from the sure box), each stage the best
        # overlaps first; the rest of the fresh ones are new.
        ids = np.full(len(fresh), -1, np.int64)
        matched = np.zeros(len(old), bool)
        order = iou + (fresh.scores >= SURE)[None, :]  # IoU <= 1: every sure pair comes first
        for flat in np.argsort(-order, axis=None, kind="stable"):
            i, j = divmod(int(flat), len(fresh))
            if iou[i, j] < HOLD_IOU:
                continue
            if not matched[i] and ids[j] < 0:
                ids[j], matched[i] = self._ids[i], True
        ids[ids < 0] = self._new_ids(int((ids < 0).sum()))
        self._ids = np.concatenate([ids, self._ids[lost]])
        self._ages = np.concatenate([np.zeros(len(fresh), np.int64), ages[lost] + 1])
        return Detections(
            boxes=np.concatenate([fresh.boxes, old.boxes[lost]]),
            scores=np.concatenate([fresh.scores, old.scores[lost]]),
            classes=np.concatenate([fresh.classes, old.classes[lost]]),
            probs=np.concatenate([fresh.probs, old.probs[lost]]),
            frame_hw=fresh.frame_hw,
        )

    def _background_step(self, frame: np.ndarray, flow_px: np.ndarray | None) -> bool:
        """Carry, take a finished answer, ask for the next; whether an answer arrived."""
        assert self._worker is not None
        self._seq += 1
        seq = self._seq
        self._flows.append((seq, flow_px))
        if self._dets is None:  # the stream's first frame (or the first after a reset) waits
            self._dets, self._since = self._renewed(self._detect(frame)), 0
            return True
        self._dets = _carried(self._dets, flow_px)
        self._since += 1
        arrived = False
        answer = self._worker.take()
        if answer is not None:
            asked_at, dets = answer
            if dets.frame_hw == frame.shape[:2]:
                for k, flow in self._flows:  # the flows since the frame it was asked on
                    if k > asked_at:
                        dets = _carried(dets, flow)
                self._dets, arrived = self._renewed(dets), True
        if self._since >= self.every and self._worker.ask(frame, seq):
            self._since = 0
            while self._flows and self._flows[0][0] <= seq:  # no answer needs these any more
                self._flows.popleft()
        return arrived


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of ``x0, y0, x1, y1`` boxes."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


def _carried(dets: Detections, flow_px: np.ndarray | None) -> Detections:
    """``dets`` with every box moved by the flow of what moves inside it.

    A person's box holds much background: its plain median flow is the background's, and the
    box would stay behind while the person walks on. So inside the box's middle, the pixels
    whose flow differs from the scene's (by half a pixel or more) are the instance, and their
    median moves the box; when under a sixth of them move (a standing person, a still camera
    pan), the whole middle's median does.
    """
    if flow_px is None or not len(dets):
        return dets
    fh, fw = flow_px.shape[:2]
    h, w = dets.frame_hw
    sx, sy = fw / w, fh / h
    scene = np.median(flow_px.reshape(-1, 2), axis=0)
    boxes = dets.boxes.copy()
    for b in boxes:
        bw, bh = (b[2] - b[0]) * sx, (b[3] - b[1]) * sy
        x0, y0 = int(b[0] * sx + 0.2 * bw), int(b[1] * sy + 0.1 * bh)
        x1, y1 = (
            max(x0 + 1, int(np.ceil(b[2] * sx - 0.2 * bw))),
            max(y0 + 1, int(np.ceil(b[3] * sy - 0.1 * bh))),
        )
        inner = flow_px[y0:y1, x0:x1].reshape(-1, 2)
        if not len(inner):
            continue
        moving = np.linalg.norm(inner - scene, axis=1) >= 0.5
        part = inner[moving] if moving.mean() >= 1 / 6 else inner
        d = np.median(part, axis=0) / np.array([sx, sy])
        b += np.array([d[0], d[1], d[0], d[1]], np.float32)
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    return Detections(boxes=boxes, scores=dets.scores, classes=dets.classes, probs=dets.probs,
                      frame_hw=dets.frame_hw)  # fmt: skip


def fuse(
    prob: np.ndarray, mask: np.ndarray, view: InstanceView | None
) -> tuple[np.ndarray, np.ndarray]:
    """HINet's (H, W) probabilities and mask, steered by the chosen instances (see above).

    Returns ``(prob, mask)`` unchanged when there is no confident chosen instance.
    """
    if view is None or not view.confident:
        return prob, mask
    ref = referent_map(view.detections, view.chosen, prob.shape)  # 0 outside, 0.5..1 inside
    inside = ref > 0
    steered = prob * (OUTSIDE + (1.0 - OUTSIDE) * ref)
    kept = mask & inside
    if kept.sum() < 0.2 * inside.sum():  # HINet marks little of the instance: its centre part
        kept = kept | (ref > 0.75)
    return np.maximum(steered, 0.5 * ref).astype(np.float32), kept
