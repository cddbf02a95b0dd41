"""INT8 calibration and parity inputs: frame pairs with phrases, through the runtime's own code.

A pair is (previous frame, frame, phrase); :func:`calibration_feeds` turns pairs into
``frame_net`` inputs with the stream's own preprocessing and flow. The pairs:

* synthetic pairs from the generator's **training** partition with their own phrases, shipped in
  ``export/data/calibration/`` (written by ``python -m training.make_calibration``: this package
  never imports the generator);
* pairs of real clips that may calibrate (Debian ``opencv-doc``'s ``Megamind.avi``,
  ``Megamind_bugy.avi``, ``tree.avi``: ``../shared/docs/REAL_WORLD.md``; never ``vtest.avi``,
  which a held-out check uses) with everyday phrases;
* held-out synthetic pairs of the shipped demo clips (parity only).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.files import OPENCV_DOC_DATA

__all__ = [
    "CALIBRATION_CLIPS",
    "REAL_PHRASES",
    "Pair",
    "calibration_feeds",
    "default_calibration_videos",
    "default_pairs",
    "demo_pairs",
    "encode_phrase",
    "frame_feeds",
    "real_pairs",
    "synthetic_pairs",
    "video_pairs",
]

#: Real clips that may calibrate (Debian opencv-doc; REAL_WORLD.md), searched in this order.
CALIBRATION_CLIPS = ("Megamind.avi", "Megamind_bugy.avi", "tree.avi")
#: Phrases for real calibration frames (people's words; only their embeddings matter here).
REAL_PHRASES = (
    "the person walking on the left",
    "the man in the dark coat",
    "the car parked on the right",
    "the tree moving in the wind",
    "the woman with a white bag",
    "the blue character in the middle",
)
#: The shipped synthetic calibration pairs (``python -m training.make_calibration``).
CALIBRATION_INDEX = Path(__file__).parent / "data" / "calibration" / "clips.json"
CALIBRATION_FORMAT = "hinet-stream-calibration-pairs"
#: (previous frame, frame, phrase): one calibration or parity input.
Pair = tuple[np.ndarray, np.ndarray, str]


def default_calibration_videos() -> list[Path]:
    """The opencv-doc clips that are installed (none: synthetic calibration only)."""
    return [OPENCV_DOC_DATA / n for n in CALIBRATION_CLIPS if (OPENCV_DOC_DATA / n).is_file()]


def frame_feeds(image: np.ndarray, flow: np.ndarray, state: Any, names: Sequence[str]) -> dict:
    """The ``frame_net`` inputs named ``names``, from a prepared frame and a text state."""
    values = {"image": image, "flow": flow, "words": state.words, "words_mask": state.words_mask,
              "sentence": state.sentence, "classes": state.classes,
              "referent": np.zeros((image.shape[0], 1, *image.shape[2:]), np.float32)}  # fmt: skip
    return {n: values[n] for n in names}


def synthetic_pairs(index: Path = CALIBRATION_INDEX, clips: int = 0) -> list[Pair]:
    """The shipped synthetic calibration pairs (``training.make_calibration``), ``clips`` clips.

    Raises:
        ExportError: the index or its video is missing or malformed.
    """
    import json

    from engine.manifest import ExportError
    from export.check import read_video_frames

    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        if data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"not a {CALIBRATION_FORMAT} file")
        frames = read_video_frames(index.parent / data["file"], count=None)
        if len(frames) != data["frames"]:
            raise ValueError(f"{data['file']} has {len(frames)} frames, the index {data['frames']}")
        return [(frames[a], frames[b], row["phrase"])
                for row in data["clips"][: clips or None] for a, b in row["pairs"]]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"INT8 calibration clips {index}: {exc}") from exc


def video_pairs(path: Path, count: int, phrases: Sequence[str]) -> list[Pair]:
    """``count`` consecutive frame pairs spread over a clip, phrases taken in turn."""
    from export.check import read_video_frames

    frames = read_video_frames(path, count=None)
    picks = sorted({max(1, int((j + 0.5) * len(frames) / count)) for j in range(count)})
    return [(frames[t - 1], frames[t], phrases[j % len(phrases)])
            for j, t in enumerate(picks) if t < len(frames)]  # fmt: skip


def demo_pairs(per_clip: int = 10) -> list[Pair]:
    """Held-out synthetic pairs: the shipped demo clips' first pass (they loop in their files).

    The demo clips come from the generator's test partition outside the fixed test set
    (:mod:`training.make_demo`): never used for calibration, training or the test numbers.
    """
    from engine.demo import demo_clips
    from export.check import read_video_frames

    out = []
    for clip in demo_clips(kind="synthetic"):
        frames = read_video_frames(clip.path, count=None)
        first = frames[0].astype(np.int16)
        loop = next((t for t in range(2, len(frames))
                     if np.abs(frames[t].astype(np.int16) - first).mean() < 2.0), len(frames))  # fmt: skip
        ts = np.linspace(1, loop - 1, min(per_clip, loop - 1)).round().astype(int)
        out += [(frames[t - 1], frames[t], clip.phrase) for t in sorted(set(ts.tolist()))]
    return out


def real_pairs(videos: Sequence[Path], per_video: int = 6) -> list[Pair]:
    """``per_video`` pairs of each real clip, with :data:`REAL_PHRASES` in turn."""
    pairs = []
    for v, path in enumerate(videos):
        pairs += video_pairs(path, per_video, REAL_PHRASES[v % len(REAL_PHRASES) :] + REAL_PHRASES)
    return pairs


def default_pairs(videos: Sequence[Path], *, synthetic: int = 0, per_video: int = 6) -> list[Pair]:
    """Calibration pairs: the shipped synthetic pairs and ``per_video`` pairs of each real clip."""
    return synthetic_pairs(clips=synthetic) + real_pairs(videos, per_video)


def calibration_feeds(engine: Any, pairs: Sequence[Pair]) -> list[dict[str, np.ndarray]]:
    """``frame_net`` inputs of frame pairs (previous, current, phrase) at the engine's size.

    Each pair goes through the runtime's own preprocessing and flow
    (:class:`engine.session.Segmenter`), so calibration sees what inference sees.
    """
    from engine.base import frame_inputs
    from engine.session import Segmenter

    names = frame_inputs(engine.config)
    seg = Segmenter(engine)
    states: dict[str, Any] = {}
    out = []
    for prev, frame, phrase in pairs:
        if phrase not in states:
            states[phrase] = encode_phrase(engine, phrase)
        seg.reset()
        seg.observe(prev)
        p = seg.prepare(frame)
        out.append(frame_feeds(p.image, p.flow, states[phrase], names))
    return out


def encode_phrase(engine: Any, phrase: str) -> Any:
    """The phrase's text state, dropping trailing words until it fits (small vocabularies)."""
    words = phrase.split()
    while True:
        try:
            return engine.encode_text(" ".join(words))
        except ValueError:
            if len(words) == 1:
                raise
            words = words[:-1]
