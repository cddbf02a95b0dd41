"""Real frames with pseudo-labels from the zero-shot grounding prior, for training.

The synthetic generator cannot show the network a real street, and no real referring dataset
can be downloaded here. What ships is the zero-shot prior (:class:`models.grounding.PhrasePrior`:
MiniLM's phrase-to-ImageNet-class weights times EfficientNet-Lite's per-location class
probabilities). Trained on synthetic data alone, HINet points at the named object on real
footage far less often than that prior does by itself: its synthetic-trained visual path marks
bright, saturated regions, and it never saw what the real prior map looks like. This module
turns real frames of clips **that no benchmark uses** (Debian ``opencv-doc``'s
``examples/data/``: ``Megamind.avi``, ``Megamind_bugy.avi``, ``tree.avi`` and the photos listed
in :data:`STILLS`; never ``vtest.avi``, which a held-out check scores: ``../shared/docs/REAL_WORLD.md``) into training samples whose labels come from that prior:

1. **the teacher map**: the prior of the network's own head (Lite0) averaged over two scales and
   a horizontal flip (a steadier map than one pass; the flip and scale averaging is chosen by
   principle, never tuned on a benchmark clip), at the frame resized so its long side is
   :data:`WORK_SIDE` pixels, the scale at which the stream runs the network (256×448);
2. **the phrases**: "the <noun>" for the everyday nouns of the wording module and
   :data:`EXTRA_NOUNS` (never the frame's top class names: on faces those are "band-aid");
   a phrase is a *positive* when its map peaks above
   :data:`POSITIVE_PEAK`, and at most :data:`MAX_POSITIVES` distinct maps are kept per frame;
   a few object and animal nouns whose map stays below :data:`NEGATIVE_PEAK` everywhere become
   *negatives* with an empty target ("the horse" on a street), so the network learns to mark
   nothing on real frames too. Person nouns are never negatives: ImageNet has no person class;
3. **the mask**: GrabCut seeded by the teacher map (sure foreground near the peak, sure
   background far below it) snaps the stride-32 blob to image edges; pixels where GrabCut and
   the map disagree are void (no loss). When GrabCut collapses, the thresholded map is used;
4. **the windows**: :data:`WINDOW`-pixel crops around the peak (the network trains at 160²),
   with the previous frame's same window so the flow (computed by the dataset, as at run time)
   is real motion; photos have no previous frame (zero flow).

The labels are the prior's, so this teaches the network to *use* the real prior on real frames,
not new categories; what the prior cannot see (people by clothing, small parts) stays unseen.
Build once (``python -m training.pseudo_real --out runs/pseudo_real_v2.npz``); a recipe names
the file under ``data.pseudo_real`` and :func:`training.recipe.build_data` mixes it in.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.preprocess import prepare_image
from models.files import OPENCV_DOC_DATA
from training.sample import VOID, Sample

__all__ = [
    "OPENCV_DATA",
    "STILLS",
    "VIDEOS",
    "PseudoRealDataset",
    "build",
    "pseudo_mask",
    "teacher_probabilities",
]

logger = logging.getLogger(__name__)

#: Debian ``opencv-doc``'s example data (Apache-2.0 AND BSD-3-Clause); no benchmark scores it
#: (``benchmarks.real_not_found`` calibrates on two of its clips).
OPENCV_DATA = OPENCV_DOC_DATA
#: Videos and the frame step at which they are sampled.
VIDEOS = {"Megamind.avi": 6, "Megamind_bugy.avi": 9, "tree.avi": 20}
#: Photos with nameable objects (people, animals, fruit, vehicles, buildings).
STILLS = (
    "baboon.jpg", "fruits.jpg", "messi5.jpg", "squirrel_cls.jpg", "HappyFish.jpg",
    "butterfly.jpg", "apple.jpg", "orange.jpg", "basketball1.png", "home.jpg", "building.jpg",
    "rubberwhale1.png", "stuff.jpg", "smarties.png", "aero1.jpg", "leuvenA.jpg", "graf1.png",
    "board.jpg", "starry_night.jpg", "box_in_scene.png", "ela_original.jpg",
    "licenseplate_motion.jpg", "Blender_Suzanne1.jpg", "chicky_512.png",
)  # fmt: skip
#: Long side of the frame the teacher and the windows work on (the stream's 448).
WORK_SIDE = 448
#: Teacher scales (relative to the work frame) and flips, averaged.
TEACHER_SCALES = (1.0, 1.5)
#: A phrase is a positive when its teacher map peaks at least here ...
POSITIVE_PEAK = 0.1
#: ... and a negative (empty target) when its map stays below this everywhere.
NEGATIVE_PEAK = 10**-3
MAX_POSITIVES = 4
NEGATIVES_PER_FRAME = 1
#: Side of the training windows (the augmentation zooms them to the 160² network input).
WINDOW = 192
WINDOWS_PER_PHRASE = 2
#: Nouns that may be negatives (never people: ImageNet has no person class).
NEGATIVE_NOUNS = (
    "dog", "cat", "horse", "bird", "cow", "sheep", "rabbit", "boat", "plane", "train", "bus",
    "truck", "bottle", "cup", "chair", "ball",
)  # fmt: skip
#: Everyday nouns beyond the wording module's, for what the photos show (never class names of
#: the frame's top classes: on faces and hands those are "band-aid", "mask", "revolver").
EXTRA_NOUNS = (
    "monkey", "squirrel", "fish", "butterfly", "flower", "fruit", "orange", "apple", "lemon",
    "banana", "building", "house", "lamp", "street sign", "candle", "glasses", "tie",
    "helmet", "shoe", "book", "bowl", "box", "plant", "fence", "wall", "roof", "road",
)  # fmt: skip


#: The EfficientNet-Lite packages' input normalisation (RGB, 0..1 scale).
LITE_MEAN, LITE_STD = (0.498,) * 3, (0.502,) * 3


def _round32(x: float) -> int:
    return max(32, int(round(x / 32.0)) * 32)


def work_frame(frame: np.ndarray) -> np.ndarray:
    """``frame`` resized so its long side is :data:`WORK_SIDE` pixels."""
    h, w = frame.shape[:2]
    s = WORK_SIDE / max(h, w)
    return cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def teacher_probabilities(
    evidence: torch.nn.Module, frame: np.ndarray, person: torch.nn.Module | None = None
) -> torch.Tensor:
    """Per-location ImageNet class probabilities of ``frame``, averaged over scales and a flip.

    Args:
        evidence: :class:`models.grounding.CategoryEvidence`.
        frame: (H, W, 3) uint8 BGR work frame.
        person: :class:`models.person.PersonMap` to add the person class (last), or ``None``.

    Returns:
        (K, h, w) float32 on the grid of the largest scale (K = 1000, or 1001 with ``person``).
    """
    from models.grounding import person_evidence

    h, w = frame.shape[:2]
    maps = []
    for s in TEACHER_SCALES:
        size = (_round32(h * s), _round32(w * s))
        x = torch.from_numpy(prepare_image(frame, size, LITE_MEAN, LITE_STD))
        x = torch.cat([x, x.flip(-1)])
        p = evidence(x)
        if person is not None:
            p = torch.cat([p, person_evidence(person(x), p)], dim=1)
        maps.append(torch.cat([p[:1], p[1:].flip(-1)]))
    grid = maps[-1].shape[-2:]
    return torch.cat([F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
                      for m in maps]).mean(0)  # fmt: skip


def pseudo_mask(frame: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """A (H, W) uint8 label (1 / 0 / :data:`VOID`) from a teacher map at the frame's size.

    GrabCut is seeded by the map relative to its peak ``r``: sure foreground ``r >= 0.8``,
    probable foreground ``0.4 <= r < 0.8``, probable background ``0.1 <= r < 0.4``, sure
    background below. Its foreground is kept where ``r >= 0.4``, its background where
    ``r < 0.5``; the rest is void. If GrabCut keeps under a fifth of the ``r >= 0.5`` area the
    map alone decides (``r >= 0.5`` object, ``r < 0.2`` background, void between).
    """
    r = teacher / max(float(teacher.max()), 1e-12)
    seed = np.full(r.shape, cv2.GC_BGD, np.uint8)
    seed[r >= 0.1] = cv2.GC_PR_BGD
    seed[r >= 0.4] = cv2.GC_PR_FGD
    seed[r >= 0.8] = cv2.GC_FGD
    label = np.full(r.shape, VOID, np.uint8)
    fg = None
    if (seed == cv2.GC_BGD).any():
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global generator
        try:
            cv2.grabCut(frame, seed, None, bgd, fgd, 3, cv2.GC_INIT_WITH_MASK)
            fg = (seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)
        except cv2.error:
            fg = None
    if fg is not None and fg.sum() >= 0.2 * (r >= 0.5).sum():
        label[fg & (r >= 0.4)] = 1
        label[~fg & (r < 0.5)] = 0
    else:
        label[r >= 0.5] = 1
        label[r < 0.2] = 0
    return label


@dataclass(frozen=True)
class _Frame:
    source: str
    index: int
    frame: np.ndarray
    prev: np.ndarray | None


def _frames(root: Path) -> Iterator[_Frame]:
    for name, step in VIDEOS.items():
        path = root / name
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            logger.warning("%s: cannot open, skipped", path)
            continue
        prev, i = None, 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % step == step - 1 and prev is not None:
                yield _Frame(name, i, work_frame(frame), work_frame(prev))
            prev, i = frame, i + 1
        cap.release()
    for name in STILLS:
        frame = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
        if frame is None:
            logger.warning("%s: cannot read, skipped", root / name)
            continue
        yield _Frame(name, 0, work_frame(frame), None)


def _windows(shape: tuple[int, int], centre: tuple[int, int], n: int, rng: np.random.Generator
             ) -> list[tuple[int, int, int]]:  # fmt: skip
    """``n`` square windows ``(y0, x0, side)`` near ``centre`` (jittered by a third of a side)."""
    h, w = shape
    side = min(WINDOW, h, w)
    out = []
    for _ in range(n):
        cy = centre[0] + int(rng.integers(-side // 3, side // 3 + 1))
        cx = centre[1] + int(rng.integers(-side // 3, side // 3 + 1))
        y0 = int(np.clip(cy - side // 2, 0, h - side))
        x0 = int(np.clip(cx - side // 2, 0, w - side))
        out.append((y0, x0, side))
    return out


def build(out: str | Path, *, root: str | Path = OPENCV_DATA, seed: int = 0,
          progress: bool = True, person: bool = False) -> dict:  # fmt: skip
    """Write the pseudo-labelled windows to ``out`` (``.npz``) and return its summary.

    With ``person`` the teacher has the person class too (:mod:`models.person`), so the person
    nouns ("the man", "the pedestrian") become positives where the segmenter sees people.

    Raises:
        FileNotFoundError: ``root`` does not exist (install Debian's ``opencv-doc``).
    """
    from tqdm import tqdm

    from models.grounding import PhrasePrior
    from training.synthetic.wording import EVERYDAY_NOUNS

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no opencv-doc example data (apt install opencv-doc)")
    rng = np.random.default_rng(seed)
    prior = PhrasePrior(variant="efficientnet_lite0", person=person)
    nouns = list(dict.fromkeys(EVERYDAY_NOUNS + EXTRA_NOUNS))
    weights = {n: torch.from_numpy(prior.class_weights(f"the {n}")).float()
               for n in dict.fromkeys(nouns + list(NEGATIVE_NOUNS))}  # fmt: skip
    table = torch.stack(list(weights.values()))  # (nouns, K)
    frames, prevs, masks, phrases, sources = [], [], [], [], []
    counts = {"frames": 0, "positives": 0, "negatives": 0}
    jobs = list(_frames(root))
    for item in tqdm(jobs, desc="pseudo-labels", unit="frame", disable=not progress):
        counts["frames"] += 1
        probs = teacher_probabilities(prior.evidence, item.frame, prior.person)  # (K, h, w)
        hw = item.frame.shape[:2]

        def teacher(noun: str, hw=hw, probs=probs) -> np.ndarray:
            m = torch.einsum("k,khw->hw", weights[noun], probs).numpy()
            return cv2.resize(m, hw[::-1], interpolation=cv2.INTER_LINEAR)

        # peaks on the teacher's grid (the upsampled map never exceeds them)
        peaks = torch.einsum("nk,khw->nhw", table, probs).amax(dim=(1, 2)).tolist()
        peak_of = dict(zip(weights, peaks))
        scored = sorted(((peak_of[n], n) for n in nouns), reverse=True)
        kept: list[tuple[str, np.ndarray]] = []
        for peak, noun in scored:
            if peak < POSITIVE_PEAK or len(kept) >= MAX_POSITIVES:
                break
            label = pseudo_mask(item.frame, teacher(noun))
            pos = label == 1
            if not pos.any():
                continue
            if any((pos & k).sum() / max((pos | k).sum(), 1) > 0.6 for _, k in kept):
                continue
            kept.append((noun, pos))
            ys, xs = np.nonzero(pos)
            centre = (int(np.median(ys)), int(np.median(xs)))
            for y0, x0, side in _windows(hw, centre, WINDOWS_PER_PHRASE, rng):
                _append(frames, prevs, masks, item, label, (y0, x0, side))
                phrases.append(f"the {noun}")
                sources.append(f"{item.source}:{item.index}")
                counts["positives"] += 1
        absent = [n for n in NEGATIVE_NOUNS if peak_of[n] < NEGATIVE_PEAK]
        for noun in rng.permutation(absent)[:NEGATIVES_PER_FRAME] if absent else []:
            centre = (int(rng.integers(hw[0])), int(rng.integers(hw[1])))
            window = _windows(hw, centre, 1, rng)[0]
            _append(frames, prevs, masks, item, np.zeros(hw, np.uint8), window)
            phrases.append(f"the {noun}")
            sources.append(f"{item.source}:{item.index}")
            counts["negatives"] += 1
    if not frames:
        raise ValueError(f"no pseudo-labels from {root}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {**counts, "samples": len(frames), "root": str(root), "seed": seed,
               "person": person}  # fmt: skip
    np.savez_compressed(
        out,
        frames=np.stack(frames),
        prevs=np.stack(prevs),
        masks=np.stack(masks),
        phrases=np.asarray(phrases),
        sources=np.asarray(sources),
        summary=np.asarray(json.dumps(summary)),
    )
    return summary


def _append(frames, prevs, masks, item: _Frame, label: np.ndarray, window) -> None:
    y0, x0, side = window
    cut = (slice(y0, y0 + side), slice(x0, x0 + side))

    def fit(a: np.ndarray, interp: int) -> np.ndarray:  # frames smaller than a window
        return a if side == WINDOW else cv2.resize(a, (WINDOW, WINDOW), interpolation=interp)

    frames.append(fit(item.frame[cut], cv2.INTER_LINEAR))
    prev = item.frame if item.prev is None else item.prev  # a photo: no motion
    prevs.append(fit(prev[cut], cv2.INTER_LINEAR))
    masks.append(fit(label[cut], cv2.INTER_NEAREST_EXACT))


class PseudoRealDataset(Sequence):
    """The samples of a :func:`build` file, as :class:`~training.sample.Sample` (split ``real``).

    Args:
        path: The ``.npz`` written by :func:`build`.

    Raises:
        FileNotFoundError: no such file (the message names the command that builds it).
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no pseudo-labelled real frames; build them with "
                f"'python -m training.pseudo_real --out {path}'"
            )
        with np.load(path, allow_pickle=False) as z:
            self.frames, self.prevs, self.masks = z["frames"], z["prevs"], z["masks"]
            self.phrases = [str(p) for p in z["phrases"]]
            self.sources = [str(s) for s in z["sources"]]
            self.summary = json.loads(str(z["summary"]))
        self.still = np.asarray([np.array_equal(f, p) for f, p in zip(self.frames, self.prevs)])

    def __len__(self) -> int:
        return len(self.phrases)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        source, index = self.sources[i].rsplit(":", 1)
        return Sample(
            frame=self.frames[i],
            prev_frame=None if self.still[i] else self.prevs[i],
            flow=None,
            expression=self.phrases[i],
            mask=self.masks[i],
            dataset="pseudo_real",
            video_id=source,
            frame_index=int(index),
            object_id=self.phrases[i],
            split="real",
        )

    def expressions(self) -> list[str]:
        """The phrases (for the tokenizer, without reading pixels)."""
        return list(self.phrases)


class Repeated(Sequence):
    """``base`` repeated ``times`` times (to give a small set a share of every epoch)."""

    def __init__(self, base: Sequence, times: int) -> None:
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        self.base, self.times = base, int(times)

    def __len__(self) -> int:
        return len(self.base) * self.times

    def __getitem__(self, i: int):  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.base[i % len(self.base)]

    def expressions(self) -> list[str]:
        return self.base.expressions() if hasattr(self.base, "expressions") else []


def overlay_grid(dataset: PseudoRealDataset, path: str | Path, *, count: int = 48) -> None:
    """A PNG grid of pseudo-labels (object green, void grey) for a person to look at."""
    step = max(1, len(dataset) // count)
    tiles = []
    for i in range(0, len(dataset), step)[:count]:
        s = dataset[i]
        img = s.frame.copy()
        img[s.mask == 1] = (0.5 * img[s.mask == 1] + (0, 127, 0)).astype(np.uint8)
        img[s.mask == VOID] = (0.6 * img[s.mask == VOID] + 40).astype(np.uint8)
        cv2.putText(img, s.expression[:24], (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
        tiles.append(img)
    cols = 8
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[r : r + cols]) for r in range(0, len(tiles), cols)]
    cv2.imwrite(str(path), np.vstack(rows))


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the .npz to write")
    parser.add_argument("--root", type=Path, default=OPENCV_DATA, help="opencv-doc example data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", type=Path, help="also write a PNG grid of the labels")
    parser.add_argument(
        "--person", action="store_true", help="the teacher has the person class (models.person)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = build(args.out, root=args.root, seed=args.seed, person=args.person)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    if args.png:
        overlay_grid(PseudoRealDataset(args.out), args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
