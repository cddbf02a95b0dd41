"""Loaders for the published referring-video datasets, read in their exact release formats.

Each loader is an indexable sequence of :class:`training.sample.Sample` (``flow`` is ``None``:
compute it from ``prev_frame`` with :class:`engine.flow.OpticalFlow`). Open one by name::

    from training.datasets import open_dataset
    ds = open_dataset("davis17", "/data/ref-davis", split="val", annotator=1)
    sample = ds[0]

See ``docs/DATASETS_USAGE.md`` for the layouts and protocol choices.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from training.datasets.a2d import A2DSentences
from training.datasets.common import DatasetFormatError, DatasetLayoutError, RealDataset
from training.datasets.davis import RefDAVIS17
from training.datasets.jhmdb import JHMDBSentences
from training.datasets.ytvos import RefYouTubeVOS

__all__ = [
    "DATASETS",
    "A2DSentences",
    "DatasetFormatError",
    "DatasetLayoutError",
    "JHMDBSentences",
    "RealDataset",
    "RefDAVIS17",
    "RefYouTubeVOS",
    "dataset_options",
    "open_dataset",
]

#: Dataset name (as written into ``Sample.dataset``) -> loader class.
DATASETS: dict[str, type[RealDataset]] = {
    "a2d": A2DSentences,
    "jhmdb": JHMDBSentences,
    "davis17": RefDAVIS17,
    "ytvos": RefYouTubeVOS,
}


def _lookup(name: str) -> type[RealDataset]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_options(name: str) -> list[str]:
    """Keyword options that :func:`open_dataset` accepts for ``name`` besides ``split``."""
    params = inspect.signature(_lookup(name).__init__).parameters
    return [p for p in params if p not in ("self", "root", "split")]


def open_dataset(
    name: str, root: Path | str, *, split: str | None = None, **options: Any
) -> RealDataset:
    """Open a real dataset by name.

    Args:
        name: One of :data:`DATASETS` (``"a2d"``, ``"jhmdb"``, ``"davis17"``, ``"ytvos"``).
        root: Dataset root (the folder ``--root`` points at).
        split: Split name; ``None`` takes the dataset's default (a2d ``train``, jhmdb
            ``test``, davis17 ``val``, ytvos ``train``).
        **options: Loader options, e.g. ``annotator=1`` for davis17 or ``frame_list=...`` for
            jhmdb (see :func:`dataset_options`).

    Returns:
        The loader, an indexable sequence of :class:`training.sample.Sample`.

    Raises:
        ValueError: Unknown name, split or option (the message lists the valid ones).
        DatasetLayoutError: The root lacks a required file (a ``ValueError``).
    """
    cls = _lookup(name)
    valid = dataset_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}"
        )
    return cls(root=root, split=cls.default_split if split is None else split, **options)
