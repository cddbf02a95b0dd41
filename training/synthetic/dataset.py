"""Indexable synthetic dataset: one sample per (clip, referred object, frame)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from engine.flow import OpticalFlow
from training.sample import Sample
from training.synthetic.generator import Clip, generate_clip, target_counts
from training.synthetic.spatial import positions
from training.synthetic.spec import SPLITS, SyntheticSpec, partition_seeds
from training.synthetic.wording import paraphrase

__all__ = ["WORDINGS", "ClipCache", "SyntheticDataset", "clip_flows"]

#: How a synthetic dataset words its referents.
WORDINGS = ("grammar", "paraphrase")


class ClipCache:
    """A small least-recently-used cache of clips and their flows, keyed by clip id."""

    def __init__(self, *, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[object, tuple[Clip, list]] = OrderedDict()

    def get(self, key: object) -> tuple[Clip, list] | None:
        """The cached ``(clip, flows)`` for ``key`` (marked most recent), or ``None``."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: object, clip: Clip) -> tuple[Clip, list]:
        """Cache ``clip`` with an empty per-frame flow slot list; evict the oldest if full."""
        item = (clip, [None] * len(clip.frames))
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return item

    def __len__(self) -> int:
        return len(self._items)


def clip_flows(frames: Sequence[np.ndarray], flow: OpticalFlow) -> list[np.ndarray]:
    """Optical flow into every frame of a clip (frame 0 gets zeros).

    Args:
        frames: T frames, (H, W, 3) uint8 BGR.
        flow: The runtime's flow estimator.

    Returns:
        T arrays (h, w, 2) float32 pixel flow at ``flow.size``, ``prev -> current``.
    """
    grays = [flow.gray(f) for f in frames]  # (h, w) uint8 each
    zero = np.zeros((*grays[0].shape, 2), np.float32)
    return [zero] + [flow(grays[t - 1], grays[t]) for t in range(1, len(grays))]


class SyntheticDataset:
    """Synthetic referring-video samples, generated on demand (numpy only).

    Sample ``i`` is one (clip, referred object, frame); frames of one object are consecutive,
    so sequential access renders each clip once. Frame 0 has ``prev_frame=None`` and zero flow.
    A sample's arrays are shared with the clip cache: copy them before modifying in place.

    Args:
        split: ``"appearance"`` or ``"motion"``.
        seeds: Clip seeds: a sequence of ints, or a partition name ``"train"``, ``"val"``
            (the whole range) — for the fixed test set use
            :func:`training.synthetic.testset.fixed_test_dataset`.
        spec: Generator settings.
        flow_preset: Optical-flow preset (:data:`engine.flow.FLOW_PRESETS`), or ``None`` to
            leave ``Sample.flow`` as ``None``.
        flow_size: ``(width, height)`` of the flow grid; defaults to the frame size (as the
            runtime's default of the network input size).
        cache_clips: How many rendered clips to keep.
        wording: ``"grammar"``: the generator's expressions; ``"paraphrase"``: the held-out
            paraphrase lexicon (:func:`training.synthetic.wording.paraphrase`, fixed per
            referent), for the test set's paraphrase split only.

    The OpenCV flow object is created lazily per process, so instances can be sent to data
    loader worker processes.
    """

    def __init__(
        self,
        *,
        split: str,
        seeds: Sequence[int] | str,
        spec: SyntheticSpec | None = None,
        flow_preset: str | None = "ultrafast",
        flow_size: tuple[int, int] | None = None,
        cache_clips: int = 8,
        wording: str = "grammar",
    ) -> None:
        if wording not in WORDINGS:
            raise ValueError(f"unknown wording {wording!r}; valid: {', '.join(WORDINGS)}")
        self.wording = wording
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if isinstance(seeds, str):
            if seeds == "test":
                raise ValueError(
                    "use training.synthetic.testset.fixed_test_dataset() for the fixed test set"
                )
            seeds = partition_seeds(seeds)
        if len(seeds) == 0:
            raise ValueError("seeds is empty")
        self.split = split
        self.seeds = seeds
        self.spec = spec or SyntheticSpec()
        self.flow_preset = flow_preset
        h, w = self.spec.size
        self.flow_size = flow_size or (w, h)
        if flow_preset is not None:
            OpticalFlow(preset=flow_preset, size=self.flow_size)  # validate now
        self._cache = ClipCache(capacity=cache_clips)
        self._flow: OpticalFlow | None = None
        seed_arr = np.asarray(seeds, np.int64)  # (num_clips,)
        if seed_arr.ndim != 1 or seed_arr.min() < 0:
            raise ValueError("seeds must be a flat sequence of non-negative ints")
        counts = target_counts(seed_arr, split=split, spec=self.spec)  # (num_clips,)
        self._ends = np.cumsum(counts * self.spec.frames)  # (num_clips,) sample index ends

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_flow"] = None  # cv2 objects do not pickle; rebuilt on first use
        state["_cache"] = ClipCache(capacity=self._cache.capacity)
        return state

    def locate(self, index: int) -> tuple[int, int, int]:
        """Sample index -> ``(seed, target position in clip.targets, frame index)``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        k = int(np.searchsorted(self._ends, index, side="right"))
        local = index - (int(self._ends[k - 1]) if k else 0)
        target, frame = divmod(local, self.spec.frames)
        return int(self.seeds[k]), target, frame

    def clip(self, seed: int) -> tuple[Clip, list]:
        """The (cached) clip of ``seed`` and its per-frame flow slots."""
        item = self._cache.get(seed)
        if item is None:
            item = self._cache.put(seed, generate_clip(seed, split=self.split, spec=self.spec))
        return item

    def _flow_for(self, clip: Clip, flows: list, t: int) -> np.ndarray | None:
        if self.flow_preset is None:
            return None
        if flows[t] is None:
            if self._flow is None:
                self._flow = OpticalFlow(preset=self.flow_preset, size=self.flow_size)
            if t == 0:
                w, h = self.flow_size
                flows[t] = np.zeros((h, w, 2), np.float32)
            else:
                f = self._flow
                flows[t] = f(f.gray(clip.frames[t - 1]), f.gray(clip.frames[t]))  # (h, w, 2)
        return flows[t]

    def __getitem__(self, index: int) -> Sample:
        seed, target, t = self.locate(index)
        clip, flows = self.clip(seed)
        obj = clip.targets[target]
        expression = obj.expression
        if self.wording == "paraphrase":  # fixed per referent: the same words on every frame
            rng = np.random.default_rng([seed, obj.object_id, 0x5EED])
            expression = paraphrase(obj.expression_attributes, rng)
        return Sample(
            frame=clip.frames[t],
            prev_frame=clip.frames[t - 1] if t > 0 else None,
            flow=self._flow_for(clip, flows, t),
            expression=expression,
            mask=obj.masks[t],
            dataset="synthetic",
            video_id=clip.video_id,
            frame_index=t,
            object_id=str(obj.object_id),
            split=self.split if self.wording == "grammar" else f"{self.split}/{self.wording}",
            attributes=dict(obj.expression_attributes),
            categories=category_map(clip, obj, t),
            positions=positions(clip, obj, t),
        )


def category_map(clip: Clip, referent, t: int) -> np.ndarray:
    """(H, W) uint8 categories of frame ``t`` as :attr:`Sample.categories` defines them.

    An object's category is its shape: the simulated ImageNet head sees every circle when the
    phrase names a circle, and colour, size or motion must pick the referent.
    """
    out = np.zeros(clip.frames[t].shape[:2], np.uint8)
    for obj in clip.objects:
        if obj.object_id != referent.object_id:
            out[obj.masks[t] > 0] = 2 if obj.shape == referent.shape else 3
    out[referent.masks[t] > 0] = 1
    return out
