"""Procedural referring-video clips: objects, motion, occlusion, exact masks and expressions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from training.synthetic.background import make_background, make_object_texture
from training.synthetic.colours import COLOURS, jitter_colour
from training.synthetic.grammar import (
    MOTIONS,
    SIZES,
    choose_attributes,
    render_expression,
)
from training.synthetic.shapes import SHAPES, draw_shape
from training.synthetic.spec import SPLITS, SyntheticSpec

__all__ = [
    "GENERATOR_VERSION",
    "Clip",
    "SceneObject",
    "generate_clip",
    "object_counts",
    "target_count",
    "target_counts",
]

#: Bumped whenever the same seed would render differently; part of every clip digest.
GENERATOR_VERSION = 1

_DIRECTIONS = {"static": (0.0, 0.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}
_DIRECTIONS |= {"up": (0.0, -1.0), "down": (0.0, 1.0)}
_MAX_ANGLE = np.deg2rad(15.0)
_LAYOUT_TRIES = 60


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One object of a clip.

    Attributes:
        object_id: 1-based id; also the object's value in indexed label maps.
        shape: One of :data:`training.synthetic.shapes.SHAPES`.
        colour: Colour name (:data:`training.synthetic.colours.COLOURS`).
        size: ``"small"`` or ``"big"``.
        motion: One of :data:`training.synthetic.grammar.MOTIONS`.
        velocity: ``(dx, dy)`` pixels per frame in the scene (camera jitter not included).
        diameter: Size in pixels.
        bgr: The jittered colour actually drawn.
        depth: Drawing order, 0 = farthest back.
        centers: (T, 2) float64 ``(x, y)`` centre in each frame, camera shake included.
        masks: (T, H, W) uint8, 1 where the object is visible (occluders removed), else 0.
        expression: Referring expression that singles it out in its clip.
        expression_attributes: Canonical attributes the expression mentions (always ``shape``).
        is_target: Whether the object is referred in this clip's split (``motion`` clips refer
            only to the pair that differs in motion alone).
    """

    object_id: int
    shape: str
    colour: str
    size: str
    motion: str
    velocity: tuple[float, float]
    diameter: float
    bgr: tuple[int, int, int]
    depth: int
    centers: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)
    expression: str
    expression_attributes: dict[str, str]
    is_target: bool

    @property
    def attributes(self) -> dict[str, str]:
        """Canonical ``shape``, ``size``, ``colour`` and ``motion``."""
        return {
            "shape": self.shape,
            "size": self.size,
            "colour": self.colour,
            "motion": self.motion,
        }

    @property
    def appearance(self) -> tuple[str, str, str]:
        """``(shape, colour, size)``: what a single frame shows."""
        return self.shape, self.colour, self.size


@dataclass(frozen=True, eq=False)
class Clip:
    """A generated clip.

    Attributes:
        seed: Seed it was generated from.
        split: ``"appearance"`` or ``"motion"``.
        spec: Generator settings.
        frames: T frames, each (H, W, 3) uint8 BGR.
        objects: The objects, ordered by ``object_id``.
        camera: (T, 2) int32 camera offsets ``(dx, dy)`` in pixels per frame.
    """

    seed: int
    split: str
    spec: SyntheticSpec
    frames: list[np.ndarray] = field(repr=False)
    objects: tuple[SceneObject, ...]
    camera: np.ndarray = field(repr=False)

    @property
    def video_id(self) -> str:
        """Stable identifier, e.g. ``"motion-0002000017"``."""
        return f"{self.split}-{self.seed:010d}"

    @property
    def targets(self) -> tuple[SceneObject, ...]:
        """The objects referred in this split, in ``object_id`` order."""
        return tuple(o for o in self.objects if o.is_target)

    def label_map(self, t: int) -> np.ndarray:
        """(H, W) uint8 visible object ids at frame ``t`` (0 background)."""
        out = np.zeros(self.frames[t].shape[:2], np.uint8)
        for o in self.objects:
            out[o.masks[t] > 0] = o.object_id
        return out

    def digest(self) -> str:
        """sha256 hex over the generator version, frames, masks and expressions."""
        h = hashlib.sha256(f"hinet-synthetic/{GENERATOR_VERSION}".encode())
        for f in self.frames:
            h.update(np.ascontiguousarray(f).tobytes())
        for o in self.objects:
            h.update(np.ascontiguousarray(o.masks).tobytes())
            h.update(o.expression.encode())
        return h.hexdigest()


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return SPLITS.index(split)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 hash of uint64 values (wrapping arithmetic)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def object_counts(seeds: np.ndarray, *, split: str, spec: SyntheticSpec) -> np.ndarray:
    """Objects per clip for many seeds at once, without rendering.

    Args:
        seeds: (N,) non-negative ints.
        split: ``"appearance"`` or ``"motion"``.
        spec: Generator settings.

    Returns:
        (N,) int64 in ``[spec.min_objects, spec.max_objects]``.
    """
    keys = np.asarray(seeds, np.uint64) * np.uint64(len(SPLITS)) + np.uint64(_split_index(split))
    span = np.uint64(spec.max_objects - spec.min_objects + 1)
    return (_splitmix64(keys) % span).astype(np.int64) + spec.min_objects


def target_counts(seeds: np.ndarray, *, split: str, spec: SyntheticSpec) -> np.ndarray:
    """(N,) int64 number of referred objects of each clip, without rendering."""
    counts = object_counts(seeds, split=split, spec=spec)
    return np.full_like(counts, 2) if split == "motion" else counts


def target_count(seed: int, *, split: str, spec: SyntheticSpec) -> int:
    """Number of referred objects in the clip ``generate_clip(seed, split, spec)``, cheaply."""
    seed = _check_seed(seed)
    return int(target_counts(np.array([seed]), split=split, spec=spec)[0])


def _sample_appearances(
    rng: np.random.Generator, n: int, taken: set[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """``n`` distinct (shape, colour, size) triples, not in ``taken``, sharing values often.

    Values are drawn from small pools (1-3 shapes, 1-3 colours) so that objects share shapes
    and colours and expressions need size/colour to disambiguate.
    """
    shapes = list(rng.choice(SHAPES, size=int(rng.integers(1, 4)), replace=False))
    colours = list(rng.choice(list(COLOURS), size=int(rng.integers(1, 4)), replace=False))
    for shape, colour, _ in taken:  # let distractors resemble the existing objects
        if shape not in shapes:
            shapes.append(shape)
        if colour not in colours:
            colours.append(colour)
    out: list[tuple[str, str, str]] = []
    used = set(taken)
    while len(out) < n:
        free = [(s, c, z) for s in shapes for c in colours for z in SIZES if (s, c, z) not in used]
        if not free:  # pools exhausted: widen them
            if rng.random() < 0.5:
                shapes.append(str(rng.choice([s for s in SHAPES if s not in shapes])))
            else:
                colours.append(str(rng.choice([c for c in COLOURS if c not in colours])))
            continue
        pick = free[int(rng.integers(len(free)))]
        out.append((str(pick[0]), str(pick[1]), str(pick[2])))
        used.add(pick)
    return out


def _diameter(rng: np.random.Generator, size: str, spec: SyntheticSpec) -> float:
    lo, hi = spec.small_diameter if size == "small" else spec.big_diameter
    return float(rng.uniform(lo, hi) * spec.unit)


def _layout(
    rng: np.random.Generator,
    *,
    diameters: list[float],
    shapes: list[str],
    angles: list[float],
    velocities: list[tuple[float, float]],
    camera: np.ndarray,
    spec: SyntheticSpec,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start positions and depth order with every object at least ``min_visible`` visible.

    Returns:
        starts (N, 2) float64 px, depth (N,) int (0 = back), full masks (N, T, H, W) uint8.
    """
    h, w = spec.size
    t_steps = np.arange(spec.frames, dtype=np.float64)  # (T,)
    jit = float(np.abs(camera).max()) if camera.size else 0.0
    best = None
    for _ in range(_LAYOUT_TRIES):
        starts = np.empty((len(diameters), 2))
        for i, (d, (vx, vy)) in enumerate(zip(diameters, velocities)):
            pad = d / 2 + jit + 1
            for axis, v, extent in ((0, vx, w), (1, vy, h)):
                travel = v * (spec.frames - 1)
                lo, hi = pad - min(travel, 0), extent - pad - max(travel, 0)
                starts[i, axis] = rng.uniform(lo, max(lo, hi))
        depth = rng.permutation(len(diameters))
        full = np.zeros((len(diameters), spec.frames, h, w), np.uint8)  # (N, T, H, W)
        for i in range(len(diameters)):
            for t in range(spec.frames):
                cx = starts[i, 0] + velocities[i][0] * t_steps[t] + camera[t, 0]
                cy = starts[i, 1] + velocities[i][1] * t_steps[t] + camera[t, 1]
                draw_shape(
                    full[i, t], shape=shapes[i], center=(cx, cy), diameter=diameters[i],
                    angle=angles[i],
                )  # fmt: skip
        visible = _visible(full, depth)
        area = full.reshape(len(diameters), spec.frames, -1).sum(-1)  # (N, T)
        vis_area = visible.reshape(len(diameters), spec.frames, -1).sum(-1)
        worst = float((vis_area / np.maximum(area, 1)).min())
        if best is None or worst > best[0]:
            best = (worst, starts, depth, full)
        if worst >= spec.min_visible:
            break
    _, starts, depth, full = best
    return starts, depth, full


def _visible(full: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(N, T, H, W) full masks + depth order -> visible masks (same shape)."""
    labels = np.zeros(full.shape[1:], np.int16)  # (T, H, W), object index + 1
    for i in np.argsort(depth):  # back to front
        labels[full[i] > 0] = i + 1
    return (labels[None] == np.arange(1, len(full) + 1)[:, None, None, None]).astype(np.uint8)


def generate_clip(seed: int, *, split: str, spec: SyntheticSpec | None = None) -> Clip:
    """Render one clip, deterministically from ``(seed, split, spec)``.

    Args:
        seed: Non-negative int; see :data:`training.synthetic.spec.PARTITIONS` for the
            train/val/test ranges.
        split: ``"appearance"``: every object differs from the others in appearance and its
            expression uses shape/size/colour only. ``"motion"``: two objects are identical in
            appearance (shape, colour, size, texture) and differ only in motion; they are the
            referred objects and their expressions must mention motion.
        spec: Generator settings (default :class:`SyntheticSpec`).

    Returns:
        The clip: frames, objects with exact visible masks and expressions.
    """
    spec = spec or SyntheticSpec()
    seed = _check_seed(seed)
    split_idx = _split_index(split)
    rng = np.random.default_rng([seed, split_idx, 0])
    n = int(object_counts(np.array([seed]), split=split, spec=spec)[0])
    h, w = spec.size
    unit = spec.unit

    if split == "motion":
        twin = _sample_appearances(rng, 1, set())[0]
        appearances = [twin, twin, *_sample_appearances(rng, n - 2, {twin})]
        twin_motions = rng.choice(MOTIONS, size=2, replace=False)
        motions = [str(m) for m in twin_motions]
        motions += [str(rng.choice(MOTIONS)) for _ in range(n - 2)]
    else:
        appearances = _sample_appearances(rng, n, set())
        motions = [str(rng.choice(MOTIONS)) for _ in range(n)]

    diameters, angles, colours_bgr, textures, velocities = [], [], [], [], []
    for i, ((shape, colour, size), motion) in enumerate(zip(appearances, motions)):
        if split == "motion" and i == 1:  # the twin: identical look, its own motion
            d, a, bgr, tex = diameters[0], angles[0], colours_bgr[0], textures[0]
        else:
            d = _diameter(rng, size, spec)
            a = 0.0 if shape in ("circle", "ring") else float(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE))
            bgr = jitter_colour(colour, rng, spec.colour_jitter)
            tex = make_object_texture(rng, bgr=bgr, size=int(np.ceil(d)) + 4)
        speed = 0.0 if motion == "static" else float(rng.uniform(*spec.speed) * unit)
        dx, dy = _DIRECTIONS[motion]
        diameters.append(d)
        angles.append(a)
        colours_bgr.append(bgr)
        textures.append(tex)
        velocities.append((dx * speed, dy * speed))

    # Shuffle so the referred objects' ids and list positions carry no information.
    order = [int(i) for i in rng.permutation(n)]
    is_twin = [split == "motion" and i < 2 for i in order]
    appearances, motions = [appearances[i] for i in order], [motions[i] for i in order]
    diameters, angles = [diameters[i] for i in order], [angles[i] for i in order]
    colours_bgr, textures = [colours_bgr[i] for i in order], [textures[i] for i in order]
    velocities = [velocities[i] for i in order]

    amp = int(round(spec.camera_jitter * unit))
    camera = rng.integers(-amp, amp + 1, size=(spec.frames, 2)).astype(np.int32)  # (T, 2)
    camera[0] = 0
    starts, depth, full = _layout(
        rng,
        diameters=diameters,
        shapes=[a[0] for a in appearances],
        angles=angles,
        velocities=velocities,
        camera=camera,
        spec=spec,
    )
    visible = _visible(full, depth)  # (N, T, H, W)
    t_steps = np.arange(spec.frames, dtype=np.float64)  # (T,)

    canvas = make_background(rng, height=h + 2 * amp, width=w + 2 * amp)
    frames = []
    for t in range(spec.frames):
        ox, oy = amp + camera[t, 0], amp + camera[t, 1]
        frame = canvas[oy : oy + h, ox : ox + w].copy()  # (H, W, 3)
        for i in np.argsort(depth):  # back to front
            cx = starts[i, 0] + velocities[i][0] * t + camera[t, 0]
            cy = starts[i, 1] + velocities[i][1] * t + camera[t, 1]
            tex = textures[i]
            x0, y0 = (
                int(np.floor(cx - diameters[i] / 2)) - 1,
                int(np.floor(cy - diameters[i] / 2)) - 1,
            )
            xa, ya = max(x0, 0), max(y0, 0)
            xb, yb = min(x0 + tex.shape[1], w), min(y0 + tex.shape[0], h)
            if xa >= xb or ya >= yb:
                continue
            m = full[i, t, ya:yb, xa:xb] > 0  # (h', w') bool
            frame[ya:yb, xa:xb][m] = tex[ya - y0 : yb - y0, xa - x0 : xb - x0][m]
        frames.append(frame)

    attrs = [
        {"shape": s, "colour": c, "size": z, "motion": m}
        for (s, c, z), m in zip(appearances, motions)
    ]
    objects = []
    for i, a in enumerate(attrs):
        is_target = split == "appearance" or is_twin[i]
        allowed = ("size", "colour", "motion") if is_twin[i] else ("size", "colour")
        used = choose_attributes(attrs, i, allowed=allowed, rng=rng)
        objects.append(
            SceneObject(
                object_id=i + 1,
                shape=a["shape"],
                colour=a["colour"],
                size=a["size"],
                motion=a["motion"],
                velocity=(float(velocities[i][0]), float(velocities[i][1])),
                diameter=float(diameters[i]),
                bgr=colours_bgr[i],
                depth=int(depth[i]),
                centers=starts[i] + np.outer(t_steps, velocities[i]) + camera,
                masks=visible[i],
                expression=render_expression(a, used, rng=rng),
                expression_attributes={"shape": a["shape"], **{k: a[k] for k in used}},
                is_target=is_target,
            )
        )
    return Clip(
        seed=seed, split=split, spec=spec, frames=frames, objects=tuple(objects), camera=camera
    )
