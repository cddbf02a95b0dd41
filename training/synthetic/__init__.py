"""Synthetic referring-video benchmark: procedural clips, exact masks, minimal expressions.

See ``docs/SYNTHETIC_FORMAT.md`` and the design section "The synthetic referring-video
benchmark". Numpy/OpenCV only; no torch.
"""

from training.synthetic.dataset import SyntheticDataset, clip_flows
from training.synthetic.generator import GENERATOR_VERSION, Clip, SceneObject, generate_clip
from training.synthetic.grammar import LEXICON, MOTIONS, SIZES
from training.synthetic.io import SyntheticDiskDataset, read_clip, write_clip, write_index
from training.synthetic.spec import PARTITIONS, SPLITS, SyntheticSpec, partition_seeds
from training.synthetic.testset import (
    TEST_SET_VERSION,
    fixed_test_dataset,
    fixed_test_seeds,
    load_test_set,
    verify_test_set,
)

__all__ = [
    "GENERATOR_VERSION",
    "LEXICON",
    "MOTIONS",
    "PARTITIONS",
    "SIZES",
    "SPLITS",
    "TEST_SET_VERSION",
    "Clip",
    "SceneObject",
    "SyntheticDataset",
    "SyntheticDiskDataset",
    "SyntheticSpec",
    "clip_flows",
    "generate_clip",
    "load_test_set",
    "partition_seeds",
    "read_clip",
    "fixed_test_dataset",
    "fixed_test_seeds",
    "verify_test_set",
    "write_clip",
    "write_index",
]
