"""The fixed, versioned synthetic test set and its hash manifest.

The test set is :data:`TEST_CLIPS_PER_SPLIT` clips per split at the default
:class:`SyntheticSpec`, seeded from the start of the ``test`` partition. The committed
manifest ``testset_<version>.json`` holds each clip's sha256 (frames, masks, expressions), so
any drift of the generator (code, OpenCV, numpy) is detected by ``verify_test_set``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from training.synthetic.dataset import SyntheticDataset
from training.synthetic.generator import GENERATOR_VERSION, Clip, generate_clip
from training.synthetic.spec import SPLITS, SyntheticSpec, partition_seeds

__all__ = [
    "MANIFEST_PATH",
    "TEST_CLIPS_PER_SPLIT",
    "TEST_SET_VERSION",
    "TEST_SPEC",
    "build_manifest",
    "load_manifest",
    "load_test_set",
    "fixed_test_dataset",
    "fixed_test_seeds",
    "verify_test_set",
]

log = logging.getLogger(__name__)

TEST_SET_VERSION = "v1"
TEST_CLIPS_PER_SPLIT = 100
#: The test set's generator settings (the defaults: 320x320, 8 frames, 2-5 objects).
TEST_SPEC = SyntheticSpec()
MANIFEST_PATH = Path(__file__).with_name(f"testset_{TEST_SET_VERSION}.json")


def fixed_test_seeds(split: str) -> list[int]:
    """The fixed seeds of one split of the test set."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return list(partition_seeds("test", TEST_CLIPS_PER_SPLIT))


def _splits(split: str) -> tuple[str, ...]:
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: all, {', '.join(SPLITS)}")
    return (split,)


def load_test_set(split: str = "all") -> Iterator[Clip]:
    """Yield the fixed test clips (appearance first, then motion), generated on the fly.

    Args:
        split: ``"appearance"``, ``"motion"`` or ``"all"``.
    """
    for s in _splits(split):
        for seed in fixed_test_seeds(s):
            yield generate_clip(seed, split=s, spec=TEST_SPEC)


def fixed_test_dataset(split: str, **kwargs) -> SyntheticDataset:
    """The test set of one split as a :class:`SyntheticDataset`.

    Keyword arguments go to :class:`SyntheticDataset` (flow options; ``wording="paraphrase"``
    for the held-out paraphrase split: the same clips and referents, other words).
    """
    return SyntheticDataset(split=split, seeds=fixed_test_seeds(split), spec=TEST_SPEC, **kwargs)


#: Earlier names of :func:`fixed_test_seeds` / :func:`fixed_test_dataset`, kept for callers.
#: Marked so pytest does not collect them when a test module imports them.
testset_seeds = fixed_test_seeds
testset_dataset = fixed_test_dataset
for _alias in (fixed_test_seeds, fixed_test_dataset):
    _alias.__test__ = False  # type: ignore[attr-defined]


def build_manifest(*, progress: bool = True) -> dict:
    """Generate the whole test set and return its manifest (JSON-ready dict)."""
    clips = {s: {} for s in SPLITS}
    total = len(SPLITS) * TEST_CLIPS_PER_SPLIT
    for clip in tqdm(load_test_set(), total=total, disable=not progress, desc="test set"):
        clips[clip.split][str(clip.seed)] = clip.digest()
    return {
        "test_set_version": TEST_SET_VERSION,
        "generator_version": GENERATOR_VERSION,
        "spec": TEST_SPEC.to_dict(),
        "hash": "sha256 over generator version, frames (T,H,W,3) uint8 bytes, then per object "
        "masks (T,H,W) uint8 bytes and expression utf-8; see Clip.digest",
        "clips": clips,
    }


def load_manifest(path: Path | str = MANIFEST_PATH) -> dict:
    """Read a manifest written by :func:`build_manifest`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"test-set manifest {path} not found; create it with "
            "`python -m training.make_synthetic --write-manifest`"
        )
    return json.loads(path.read_text())


def verify_test_set(
    *, split: str = "all", limit: int | None = None, manifest: dict | None = None
) -> list[str]:
    """Regenerate test clips and compare their hashes with the manifest.

    Args:
        split: ``"appearance"``, ``"motion"`` or ``"all"``.
        limit: Check only the first ``limit`` seeds of each split.
        manifest: Manifest dict (default: the committed one).

    Returns:
        Descriptions of mismatching clips; empty when everything matches.
    """
    manifest = manifest or load_manifest()
    if manifest.get("test_set_version") != TEST_SET_VERSION:
        return [f"manifest is {manifest.get('test_set_version')}, code is {TEST_SET_VERSION}"]
    if manifest.get("spec") != TEST_SPEC.to_dict():
        return ["manifest spec differs from TEST_SPEC"]
    bad = []
    for s in _splits(split):
        for seed in fixed_test_seeds(s)[:limit]:
            want = manifest["clips"][s].get(str(seed))
            got = generate_clip(seed, split=s, spec=TEST_SPEC).digest()
            if got != want:
                bad.append(f"{s} seed {seed}: expected {want}, generated {got}")
    if bad:
        log.warning("synthetic test set drifted: %d clips differ", len(bad))
    return bad
