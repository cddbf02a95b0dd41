"""Which samples an evaluation runs: the synthetic test set in its wordings, or a real dataset.

:func:`load_samples` opens a dataset (the generated synthetic test set v1, or A2D-Sentences,
J-HMDB-Sentences, Ref-DAVIS17, Ref-YouTube-VOS from ``--root``) as one lazy, sized sequence of
:class:`training.sample.Sample`, optionally limited to N samples spread evenly over every split.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.sample import Sample

__all__ = ["DATASETS", "EVAL_SPLITS", "BySize", "SampleView", "load_samples"]

#: Datasets :func:`load_samples` opens.
DATASETS = ("synthetic", "a2d", "jhmdb", "davis17", "ytvos")
#: Split evaluated when none is given, where it differs from the loader's default.
EVAL_SPLITS = {"a2d": "test"}


class BySize(Sequence):
    """A synthetic dataset whose samples' split reads ``<split>/<small|big>``."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        seed, target, _ = self.base.locate(i)
        size = self.base.clip(seed)[0].targets[target].size  # "small" / "big"
        sample = self.base[i]
        return replace(sample, split=f"{sample.split}/{size}")


class SampleView:
    """Lazy concatenation of indexable datasets (sized for tqdm).

    With ``limit``, ``limit`` samples spread evenly over the whole concatenation, so every
    split (and every part of a split) is represented in proportion, in their order.
    """

    def __init__(self, parts: Sequence[Any], limit: int | None = None) -> None:
        self._parts = list(parts)
        total = sum(len(p) for p in self._parts)
        if limit is None or limit >= total:
            self._picks: list[int] | None = None
            self._len = total
        else:  # evenly spaced positions; distinct because limit < total
            self._picks = [(2 * k + 1) * total // (2 * limit) for k in range(limit)]
            self._len = limit

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Sample]:
        picks = None if self._picks is None else iter(self._picks)
        want = None if picks is None else next(picks, None)
        start = 0
        for part in self._parts:
            for i in range(len(part)):
                if picks is None:
                    yield part[i]
                    continue
                if want == start + i:
                    yield part[i]
                    want = next(picks, None)
            start += len(part)


def load_samples(
    dataset: str,
    *,
    root: Path | None = None,
    split: str | None = None,
    options: dict[str, Any] | None = None,
    wording: str = "grammar",
    clips: int | None = None,
    by_size: bool = False,
    limit: int | None = None,
) -> SampleView:
    """The samples of ``dataset`` an evaluation runs (loaders imported lazily).

    Args:
        dataset: One of :data:`DATASETS`.
        root: The dataset's folder (not for ``synthetic``, which is generated).
        split: The split (default: the evaluation split, :data:`EVAL_SPLITS`, else the loader's).
        options: Loader options (``annotator=1`` for DAVIS).
        wording: Synthetic only: ``grammar``, ``paraphrase``, ``both``, ``spatial`` or ``all``.
        clips: Synthetic only: the first N test clips of each split.
        by_size: Synthetic only: each split per referred-object size (``<split>/small|big``).
        limit: At most this many samples, spread evenly over every split.

    Raises:
        ValueError: options that do not fit the dataset, or an unknown split.
    """
    options = dict(options or {})
    if dataset == "synthetic":
        if root is not None or options:
            raise ValueError(
                "--root and --option are not used with --dataset synthetic (it is generated)"
            )
        from training.synthetic import SPLITS
        from training.synthetic.dataset import SyntheticDataset
        from training.synthetic.spatial import SpatialTestDataset
        from training.synthetic.testset import TEST_SPEC, fixed_test_seeds

        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown synthetic split {split!r}; valid: {', '.join(SPLITS)}")
        splits = (split,) if split else SPLITS
        wordings = {
            "both": ("grammar", "paraphrase"),
            "all": ("grammar", "paraphrase", "spatial"),
        }.get(wording, (wording,))

        def part(split: str, wording: str):
            # Sample.flow stays None: the flow is computed as the runtime computes it.
            seeds = fixed_test_seeds(split)
            if clips is not None:
                seeds = seeds[:clips]
            base = SyntheticDataset(
                split=split,
                seeds=seeds,
                spec=TEST_SPEC,
                flow_preset=None,
                wording="grammar" if wording == "spatial" else wording,
            )
            return SpatialTestDataset(base) if wording == "spatial" else base

        parts = [part(s, w) for w in wordings for s in splits]
        if by_size:
            parts = [BySize(p) for p in parts]
        return SampleView(parts, limit)
    if by_size or clips is not None or wording != "grammar":
        raise ValueError(
            "--by-size, --clips and --wording need --dataset synthetic (the generator knows "
            "object sizes, clips and attributes)"
        )
    if root is None:
        raise ValueError(f"--root is required for --dataset {dataset}")
    from training.datasets import open_dataset

    split = split or EVAL_SPLITS.get(dataset)
    dataset = open_dataset(dataset, root, split=split, **options)
    return SampleView([dataset], limit)
