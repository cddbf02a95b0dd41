"""Ref-DAVIS17: DAVIS 2017 sequences with referring expressions from two annotators.

One sample = (expression, sequence, frame, object) for every frame of the sequence that has an
annotation PNG. Masks are read as palette indices: 1 where the index equals the object id,
255 where void, 0 elsewhere.

Choices:

- ``annotator``: ``1``, ``2`` or ``"both"`` (each annotator's expression is its own sample).
- ``expressions``: ``"first_frame"`` (``Davis17_annot{n}.txt``, written looking at the first
  frame) or ``"full_video"`` (``Davis17_annot{n}_full_video.txt``).
- Encodings: annotator 2's files are latin-1; annotator 1's are read as UTF-8, falling back to
  latin-1.
- Sequence-name typos in the expression files are fixed (:data:`SEQUENCE_TYPOS`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from training.datasets.common import (
    RealDataset,
    check_layout,
    decode_text,
    normalize_expression,
)
from training.sample import Sample

__all__ = [
    "ANNOTATORS",
    "DAVIS_LAYOUT",
    "EXPRESSION_SOURCES",
    "SEQUENCE_TYPOS",
    "DavisEntry",
    "DavisExpression",
    "RefDAVIS17",
    "parse_expression_file",
]

logger = logging.getLogger(__name__)

DAVIS_LAYOUT = """\
<root>/
  DAVIS/
    JPEGImages/480p/<seq>/00000.jpg
    Annotations/480p/<seq>/00000.png         indexed PNG: 0 bg, 1..N objects, 255 void
    ImageSets/2017/train.txt, val.txt        one sequence per line
  davis_text_annotations/
    Davis17_annot1.txt, Davis17_annot2.txt                          first-frame expressions
    Davis17_annot1_full_video.txt, Davis17_annot2_full_video.txt    full-video expressions
                                            lines: <seq> <obj_id> "<expression>"
"""

#: Misspelt sequence names in the published expression files -> DAVIS names.
SEQUENCE_TYPOS = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
#: Valid ``annotator`` values.
ANNOTATORS = ("1", "2", "both")
#: Valid ``expressions`` values -> file-name suffix.
EXPRESSION_SOURCES = {"first_frame": "", "full_video": "_full_video"}
_ENCODINGS = {1: ("utf-8", "latin-1"), 2: ("latin-1",)}
_LINE = re.compile(r"^(\S+)\s+(\d+)\s+(.*)$")


@dataclass(frozen=True, slots=True)
class DavisExpression:
    """One line of a Ref-DAVIS expression file.

    Attributes:
        sequence: DAVIS sequence (typo fixed).
        object_id: Object label in the annotation PNGs.
        expression: Normalised expression.
        annotator: 1 or 2.
    """

    sequence: str
    object_id: int
    expression: str
    annotator: int


@dataclass(frozen=True, slots=True)
class DavisEntry:
    """One Ref-DAVIS17 sample, without pixels.

    Attributes:
        video_id: DAVIS sequence.
        frame_index: 0-based frame (position in the sorted frame list = the file number).
        object_id: Object label as a string.
        expression: Normalised expression.
        annotator: 1 or 2.
        frame_name: File stem, e.g. ``"00012"``.
        prev_name: File stem of the previous frame, or ``None`` for the first.
    """

    video_id: str
    frame_index: int
    object_id: str
    expression: str
    annotator: int
    frame_name: str
    prev_name: str | None


def parse_expression_file(path: Path, *, annotator: int) -> list[DavisExpression]:
    """Parse a ``Davis17_annot*.txt`` file (``<seq> <obj_id> "<expression>"`` per line).

    Args:
        path: The file.
        annotator: 1 (UTF-8, latin-1 fallback) or 2 (latin-1).

    Returns:
        The expressions in file order; malformed lines are logged and skipped.
    """
    text = decode_text(path.read_bytes(), encodings=_ENCODINGS[annotator], path=path)
    out = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        expression = match.group(3).strip() if match else ""
        if len(expression) >= 2 and expression[0] == expression[-1] == '"':
            expression = expression[1:-1]
        expression = normalize_expression(expression)
        if match is None or not expression:
            logger.warning("davis17: skipped malformed line %s:%d: %r", path, line_no, line)
            continue
        sequence = SEQUENCE_TYPOS.get(match.group(1), match.group(1))
        out.append(DavisExpression(sequence, int(match.group(2)), expression, annotator))
    return out


class RefDAVIS17(RealDataset):
    """Ref-DAVIS17 train or val split.

    Args:
        root: Folder holding ``DAVIS/`` and ``davis_text_annotations/`` (see
            :data:`DAVIS_LAYOUT`).
        split: ``"train"`` (60 sequences) or ``"val"`` (30).
        annotator: ``1``, ``2`` or ``"both"``.
        expressions: ``"first_frame"`` or ``"full_video"``.

    Raises:
        ValueError: Unknown split, annotator or expression source.
        DatasetLayoutError: A required file or folder is missing.
    """

    name = "davis17"
    splits = ("train", "val")
    default_split = "val"
    layout = DAVIS_LAYOUT

    def __init__(
        self,
        *,
        root: Path | str,
        split: str = "val",
        annotator: int | str = "both",
        expressions: str = "first_frame",
    ) -> None:
        super().__init__(root=root, split=split)
        if str(annotator) not in ANNOTATORS:
            raise ValueError(f"davis17: unknown annotator {annotator!r}; valid: 1, 2, 'both'")
        if expressions not in EXPRESSION_SOURCES:
            raise ValueError(
                f"davis17: unknown expressions {expressions!r}; valid: "
                f"{', '.join(EXPRESSION_SOURCES)}"
            )
        self.annotators = (1, 2) if str(annotator) == "both" else (int(annotator),)
        self.expression_source = expressions
        files = {
            n: f"davis_text_annotations/Davis17_annot{n}{EXPRESSION_SOURCES[expressions]}.txt"
            for n in self.annotators
        }
        required = (
            "DAVIS/JPEGImages/480p",
            "DAVIS/Annotations/480p",
            f"DAVIS/ImageSets/2017/{split}.txt",
            *files.values(),
        )
        self.root = check_layout(root, dataset=self.name, required=required, layout=self.layout)

        sets = self.root / "DAVIS" / "ImageSets" / "2017"
        sequences = sets.joinpath(f"{split}.txt").read_text(encoding="utf-8").split()
        known = set(sequences)
        for other in self.splits:
            if other != split and (sets / f"{other}.txt").exists():
                known |= set((sets / f"{other}.txt").read_text(encoding="utf-8").split())

        by_sequence: dict[str, list[DavisExpression]] = {}
        for n, rel in files.items():
            for item in parse_expression_file(self.root / rel, annotator=n):
                if item.sequence not in known:
                    logger.warning(
                        "davis17: %s names unknown sequence %r, skipped", rel, item.sequence
                    )
                    continue
                by_sequence.setdefault(item.sequence, []).append(item)

        for sequence in sequences:
            items = by_sequence.get(sequence, [])
            if not items:
                logger.warning("davis17: no expressions for sequence %s", sequence)
                continue
            frames, annotated = self._frame_names(sequence)
            for item in items:
                for index, name in enumerate(frames):
                    if name not in annotated:
                        continue
                    self._entries.append(
                        DavisEntry(
                            video_id=sequence,
                            frame_index=index,
                            object_id=str(item.object_id),
                            expression=item.expression,
                            annotator=item.annotator,
                            frame_name=name,
                            prev_name=frames[index - 1] if index > 0 else None,
                        )
                    )
        logger.info("davis17 %s: %d samples", split, len(self))

    def _frame_names(self, sequence: str) -> tuple[list[str], set[str]]:
        """Sorted stems of a sequence's JPEG frames, and the subset with an annotation PNG."""
        images = self._require(self.root / "DAVIS" / "JPEGImages" / "480p" / sequence)
        masks = self._require(self.root / "DAVIS" / "Annotations" / "480p" / sequence)
        jpgs = sorted(p.stem for p in images.glob("*.jpg"))
        pngs = {p.stem for p in masks.glob("*.png")}
        missing = [name for name in jpgs if name not in pngs]
        if missing:
            logger.warning(
                "davis17: %s has %d frames without annotation (e.g. %s), skipped",
                sequence,
                len(missing),
                missing[0],
            )
        return jpgs, pngs

    def _load(self, entry: DavisEntry) -> Sample:
        davis = self.root / "DAVIS"
        return self._load_frame_and_png(
            entry,
            images=davis / "JPEGImages" / "480p" / entry.video_id,
            annotations=davis / "Annotations" / "480p" / entry.video_id,
        )
