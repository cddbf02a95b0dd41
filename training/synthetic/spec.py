"""Configuration of the synthetic referring-video generator and its seed partitions."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = [
    "PARTITIONS",
    "SPLITS",
    "SyntheticSpec",
    "partition_seeds",
]

#: What disambiguates the referred object: its appearance, or only its motion.
SPLITS = ("appearance", "motion")

#: Disjoint seed ranges ``[start, stop)`` for training, validation and the fixed test set.
#: The same seed gives different clips in the two splits (the split is part of the RNG seed).
PARTITIONS: dict[str, tuple[int, int]] = {
    "train": (0, 1_000_000),
    "val": (1_000_000, 1_100_000),
    "test": (2_000_000, 2_100_000),
}


@dataclass(frozen=True)
class SyntheticSpec:
    """How synthetic clips look. Lengths are fractions of ``min(H, W)`` unless stated.

    Attributes:
        size: Frame ``(H, W)`` in pixels, each at least 48.
        frames: Frames per clip ``T`` (at least 2).
        min_objects: Fewest objects per clip (at least 2).
        max_objects: Most objects per clip (at most 5).
        small_diameter: ``(lo, hi)`` diameter range of ``small`` objects.
        big_diameter: ``(lo, hi)`` diameter range of ``big`` objects; ``lo`` must exceed
            ``1.4 * small_diameter[1]`` so the two sizes never overlap.
        speed: ``(lo, hi)`` speed range of moving objects per frame. At the default this is
            9.6-19 px/frame at 320 px and 2.9-5.8 px/frame at 96 px.
        camera_jitter: Amplitude of the integer camera shake per frame (0 disables it).
        colour_jitter: Amplitude of the per-channel colour jitter, in 0-255 units.
        min_visible: Fewest visible fraction of each object's area in every frame (occlusion).
    """

    size: tuple[int, int] = (320, 320)
    frames: int = 8
    min_objects: int = 2
    max_objects: int = 5
    small_diameter: tuple[float, float] = (0.12, 0.16)
    big_diameter: tuple[float, float] = (0.24, 0.28)
    speed: tuple[float, float] = (0.03, 0.06)
    camera_jitter: float = 0.003
    colour_jitter: float = 14.0
    min_visible: float = 0.5

    def __post_init__(self) -> None:
        h, w = self.size
        if min(h, w) < 48:
            raise ValueError(f"size must be at least 48x48, got {self.size}")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")
        if not 2 <= self.min_objects <= self.max_objects <= 5:
            raise ValueError(
                "need 2 <= min_objects <= max_objects <= 5, got "
                f"{self.min_objects}..{self.max_objects}"
            )
        for name in ("small_diameter", "big_diameter", "speed"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be 0 < lo <= hi, got {(lo, hi)}")
        if self.big_diameter[0] < 1.4 * self.small_diameter[1]:
            raise ValueError(
                f"big_diameter {self.big_diameter} must start at >= 1.4 x the largest small "
                f"diameter {self.small_diameter[1]} so small/big are unambiguous"
            )
        # A big object moving at top speed for T-1 frames must fit inside the frame.
        travel = self.speed[1] * (self.frames - 1) + self.big_diameter[1] + 4 * self.camera_jitter
        if travel > 0.95:
            raise ValueError(
                f"objects cannot stay in frame: speed {self.speed} x {self.frames - 1} steps + "
                f"big diameter {self.big_diameter[1]} > frame; lower speed, frames or sizes"
            )
        if not 0 <= self.camera_jitter < 0.05:
            raise ValueError(f"camera_jitter must be in [0, 0.05), got {self.camera_jitter}")
        if not 0 <= self.min_visible < 1:
            raise ValueError(f"min_visible must be in [0, 1), got {self.min_visible}")

    @property
    def unit(self) -> float:
        """Pixels per unit length: ``min(H, W)``."""
        return float(min(self.size))

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> SyntheticSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown SyntheticSpec fields {sorted(unknown)}; valid: {sorted(known)}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def partition_seeds(partition: str, count: int | None = None, *, start: int = 0) -> range:
    """Seeds of a partition (``train``/``val``/``test``), optionally the ``count`` from ``start``.

    Args:
        partition: One of :data:`PARTITIONS`.
        count: How many seeds; ``None`` for the whole rest of the range.
        start: Offset of the first seed inside the partition.

    Returns:
        A ``range`` of seeds, always inside the partition.
    """
    if partition not in PARTITIONS:
        raise ValueError(f"unknown partition {partition!r}; valid: {', '.join(PARTITIONS)}")
    lo, hi = PARTITIONS[partition]
    first = lo + start
    stop = hi if count is None else first + count
    if start < 0 or (count is not None and count < 0) or stop > hi:
        raise ValueError(
            f"partition {partition!r} holds seeds [{lo}, {hi}); start={start} count={count} "
            "leaves it"
        )
    return range(first, stop)
