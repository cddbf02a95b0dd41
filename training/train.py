"""Train HINet from a recipe file: AdamW, warm-up + poly/cosine schedule, BCE + Dice, DDP, resume.

CLI (thin wrapper over :func:`train`)::

    python -m training.train --recipe training/recipes/synthetic_lite0.json --out runs/lite0 \
        --threads 2 --export models/weights/hinet_lite0
    python -m training.train --recipe training/recipes/synthetic_lite0.json --out runs/lite0 \
        --resume                                       # continue from runs/lite0/last
    torchrun --nproc_per_node 4 -m training.train --recipe training/recipes/a2d_lite0.json \
        --data-root /data/a2d_sentences --out runs/a2d  # several GPUs (DistributedDataParallel)

A recipe (``training/recipes/*.json``) fixes the model preset and overrides, the data, the
optimiser, the schedule, the loss, the augmentation and the seed; see :class:`Recipe`.

What a run writes under ``--out``:

* ``train_log.csv`` (one row per ``log_every`` steps), ``val_log.csv`` (one row per
  validation), ``curves.png`` (:mod:`training.plots`), ``summary.json``;
* ``last/`` the resumable state, rewritten every ``checkpoint_every`` steps and at the end:
  ``model/`` (a :func:`models.checkpoint.save_checkpoint` folder with the tokenizer, float32),
  ``optimizer.safetensors`` + ``rng.safetensors`` (tensors) and ``trainer.json`` (step, scalar
  optimiser state, scheduler, AMP scaler, Python/numpy RNG states, SHA-256 of the tensor files).
  No pickle anywhere;
* ``best/`` the checkpoint with the best validation mIoU (validation seeds, never test).

``--export DIR`` finally writes the best checkpoint (float16 storage) to ``DIR``.

Determinism: the batch order is a function of ``(seed, epoch)`` (a
:class:`torch.utils.data.DistributedSampler` that can start mid-epoch) and the augmentation of
``(seed, epoch, index)``; resuming restores weights, optimiser, scheduler, scaler and every RNG,
so on the same device and thread count the continued run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler

from engine.preprocess import logits_to_mask
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.config import HINetConfig, build_config
from models.hinet import HINet, build_model
from models.tokenizer import Tokenizer
from training.losses import LossWeights, total_loss
from training.metrics import ReferringAccumulator
from training.sample import Sample
from training.torch_data import AugmentConfig, ReferringTorchDataset

__all__ = [
    "DATA_KINDS",
    "SCHEDULES",
    "STATE_FORMAT",
    "Recipe",
    "ResumeError",
    "TrainResult",
    "build_data",
    "load_recipe",
    "lr_factor",
    "main",
    "train",
    "validate",
]

logger = logging.getLogger(__name__)

#: Learning-rate schedules after the linear warm-up.
SCHEDULES = ("poly", "cosine")
#: ``data.kind`` values of a recipe.
DATA_KINDS = ("synthetic", "dataset")
#: ``format`` of ``trainer.json``.
STATE_FORMAT = "hinet-stream-train-state"
STATE_VERSION = 1
_VAL_OVERALL = "overall"
#: Synthetic clips per split rendered for the tokenizer corpus (the grammar's vocabulary is
#: small; rendering every training clip would take minutes).
_CORPUS_CLIPS = 600
#: Recipe fields that may differ when resuming (they do not change the optimisation).
_RESUME_FREE = {"val_every", "checkpoint_every", "log_every", "num_workers", "val_batch_size"}


class ResumeError(ValueError):
    """A resume state is missing, corrupt or belongs to a different recipe."""


# -- the recipe ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run (one JSON file per recipe).

    Attributes:
        name: Recipe name (logs, checkpoint meta).
        preset: Model preset (:data:`models.config.PRESETS`).
        model: Overrides of the preset's :class:`~models.config.HINetConfig` fields, e.g.
            ``{"input_size": [192, 192]}``.
        data: Data section. ``{"kind": "synthetic", "size": [H, W], "train_clips": {"appearance":
            n, "motion": m}, "val_clips": {...}, "spec": {SyntheticSpec overrides}}`` or
            ``{"kind": "dataset", "name": "a2d", "train_split": "train", "val_fraction": 0.05}``
            (the root comes from ``--data-root``; validation holds out whole training videos).
        steps: Optimiser steps.
        batch_size: Global batch size (split evenly over DDP processes).
        lr: Peak learning rate of the non-backbone parameters.
        backbone_lr_mult: Backbone learning rate = ``lr * backbone_lr_mult``.
        weight_decay: AdamW weight decay (not applied to norms and biases).
        warmup_steps: Linear warm-up from 0 to the peak.
        schedule: ``"poly"`` or ``"cosine"`` decay after the warm-up.
        poly_power: Exponent of the poly schedule.
        min_lr_ratio: Floor of the schedule as a fraction of the peak.
        grad_clip: Max global gradient norm (0 disables clipping).
        loss: :class:`~training.losses.LossWeights` fields.
        augment: :class:`~training.torch_data.AugmentConfig` fields.
        seed: Seed of weights init, batch order and augmentation.
        vocab_size: Tokenizer vocabulary size (``None``: the model's ``text.vocab_size``).
        tokenizer_type: SentencePiece model type.
        amp: Mixed precision (float16 autocast + GradScaler) on CUDA; ignored on CPU.
        val_every: Validate every this many steps (and at the end).
        val_batch_size: Batch size of validation.
        checkpoint_every: Write the resumable state every this many steps (and at the end).
        log_every: Write a ``train_log.csv`` row every this many steps.
        num_workers: Data loader worker processes.
    """

    name: str
    preset: str
    data: dict[str, Any]
    steps: int
    batch_size: int
    lr: float
    model: dict[str, Any] = field(default_factory=dict)
    backbone_lr_mult: float = 1.0
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: str = "poly"
    poly_power: float = 0.9
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0
    loss: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    vocab_size: int | None = None
    tokenizer_type: str = "unigram"
    amp: bool = True
    val_every: int = 500
    val_batch_size: int = 16
    checkpoint_every: int = 500
    log_every: int = 10
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}"
            )
        if not self.lr > 0 or self.backbone_lr_mult < 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0; backbone_lr_mult and weight_decay must be >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps), got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio < 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1), got {self.min_lr_ratio}")
        for name in ("val_every", "val_batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.num_workers < 0 or self.grad_clip < 0:
            raise ValueError("num_workers and grad_clip must be >= 0")
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        if kind not in DATA_KINDS:
            raise ValueError(f"data.kind must be one of {', '.join(DATA_KINDS)}, got {kind!r}")
        # Fail early on bad sections (these raise ValueError naming the valid keys).
        self.model_config()
        self.loss_weights()
        self.augment_config()

    def model_config(self) -> HINetConfig:
        """The model config: the preset with :attr:`model` overrides."""
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in self.model.items()}
        return build_config(self.preset, **overrides)

    def loss_weights(self) -> LossWeights:
        """The :class:`~training.losses.LossWeights` of :attr:`loss`."""
        known = {f.name for f in dataclasses.fields(LossWeights)}
        unknown = sorted(set(self.loss) - known)
        if unknown:
            raise ValueError(f"unknown loss keys {unknown}; valid: {', '.join(sorted(known))}")
        return LossWeights(**self.loss)

    def augment_config(self) -> AugmentConfig:
        """The :class:`~training.torch_data.AugmentConfig` of :attr:`augment`."""
        return AugmentConfig.from_dict(self.augment)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (round-trips through :meth:`from_dict`)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Build from a JSON object; unknown or missing required keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"a recipe must be a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown recipe keys {unknown}; valid: {', '.join(sorted(fields))}")
        required = [
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in data]
        if missing:
            raise ValueError(f"recipe lacks required keys {missing}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"bad recipe: {exc}") from exc


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe JSON file.

    Raises:
        ValueError: missing file, invalid JSON, or an invalid recipe.
    """
    path = Path(path)
    if not path.is_file():
        found = sorted(p.name for p in (Path(__file__).parent / "recipes").glob("*.json"))
        raise ValueError(f"recipe file not found: {path}; shipped recipes: {', '.join(found)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    return Recipe.from_dict(data)


# -- data ------------------------------------------------------------------------------------------
def _synthetic(data: dict[str, Any], partition: str) -> list[Any]:
    from training.synthetic.dataset import SyntheticDataset
    from training.synthetic.spec import SPLITS, SyntheticSpec, partition_seeds

    known = {"kind", "size", "train_clips", "val_clips", "spec", "seed_offset"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown synthetic data keys {unknown}; valid: {', '.join(sorted(known))}"
        )
    spec_kw = dict(data.get("spec", {}))
    if "size" in data:
        spec_kw["size"] = data["size"]
    spec = SyntheticSpec.from_dict(spec_kw)
    clips = data.get(f"{partition}_clips", {})
    bad = sorted(set(clips) - set(SPLITS))
    if bad or not clips:
        raise ValueError(f"data.{partition}_clips needs counts for splits {SPLITS}, got {clips}")
    offset = int(data.get("seed_offset", 0)) if partition == "train" else 0
    return [
        SyntheticDataset(split=split, seeds=partition_seeds(partition, n, start=offset), spec=spec)
        for split, n in clips.items()
        if n > 0
    ]


def _holdout(video_id: str, fraction: float) -> bool:
    digest = hashlib.sha256(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


class _Subset(Sequence):
    """A view of ``base`` at ``indices`` (keeps the loaders' lazy pixel reading)."""

    def __init__(self, base: Sequence, indices: list[int]) -> None:
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        return self.base[self.indices[i]]


def _real(data: dict[str, Any], root: str | Path | None) -> tuple[list[Any], list[Any]]:
    known = {"kind", "name", "train_split", "val_fraction"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown dataset data keys {unknown}; valid: {', '.join(sorted(known))}")
    if root is None:
        raise ValueError(f"recipe trains on {data.get('name')!r}: pass --data-root DIR")
    from training.datasets import open_dataset

    base = open_dataset(data["name"], root, split=data.get("train_split", "train"))
    fraction = float(data.get("val_fraction", 0.05))
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    held = {v for v in base.video_ids() if _holdout(v, fraction)}
    train_idx = [i for i, e in enumerate(base.entries) if e.video_id not in held]
    val_idx = [i for i, e in enumerate(base.entries) if e.video_id in held]
    if not train_idx or not val_idx:
        raise ValueError(f"val_fraction {fraction} leaves an empty train or validation set")
    return [_Subset(base, train_idx)], [_Subset(base, val_idx)]


def build_data(recipe: Recipe, *, data_root: str | Path | None = None) -> tuple[list, list]:
    """Training and validation sample sequences of a recipe (never the test set).

    Returns:
        ``(train_parts, val_parts)``: lists of indexable :class:`Sample` sequences.
    """
    if recipe.data["kind"] == "synthetic":
        return _synthetic(recipe.data, "train"), _synthetic(recipe.data, "val")
    return _real(recipe.data, data_root)


def _expressions(parts: Sequence[Sequence[Sample]]) -> list[str]:
    """Training expressions for the tokenizer (without reading pixels where possible)."""
    out: list[str] = []
    for part in parts:
        base = getattr(part, "base", part)
        if hasattr(base, "expressions"):
            out.extend(base.expressions())
        elif hasattr(part, "seeds") and hasattr(part, "clip"):  # synthetic: render clips
            seeds = list(part.seeds)[:_CORPUS_CLIPS]
            out.extend(o.expression for s in seeds for o in part.clip(int(s))[0].targets)
        else:
            out.extend(s.expression for s in part)
    return out


def _encodable(expression: str, tokenizer: Tokenizer, config: HINetConfig) -> bool:
    try:
        tokenizer.encode(
            Tokenizer.normalize(expression),
            max_tokens=config.text.max_tokens,
            max_chars=config.text.max_chars,
        )
    except ValueError:
        return False
    return True


def _drop_unencodable(parts: list, tokenizer: Tokenizer, config: HINetConfig) -> list:
    """Drop real-data samples whose expression is too long for the model (logged).

    Synthetic expressions must all fit (a failure is a recipe bug and raises ``ValueError``).
    """
    out = []
    for part in parts:
        if not isinstance(part, _Subset):
            bad = [e for e in set(_expressions([part])) if not _encodable(e, tokenizer, config)]
            if bad:
                raise ValueError(
                    f"{len(bad)} training expressions do not fit text.max_tokens="
                    f"{config.text.max_tokens}, e.g. {bad[0]!r}; raise vocab_size or use bpe"
                )
            out.append(part)
            continue
        entries = part.base.entries
        keep = [i for i in part.indices if _encodable(entries[i].expression, tokenizer, config)]
        if len(keep) < len(part.indices):
            logger.warning(
                "dropped %d of %d training samples whose expression is too long",
                len(part.indices) - len(keep),
                len(part.indices),
            )
        out.append(_Subset(part.base, keep))
    return out


# -- schedule, optimiser ---------------------------------------------------------------------------
def lr_factor(
    step: int, *, steps: int, warmup: int, schedule: str, power: float = 0.9, floor: float = 0.0
) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup`` for ``step < warmup``, then ``poly``:
    ``(1 - p) ** power`` or ``cosine``: ``0.5 (1 + cos(pi p))`` with ``p`` the fraction of the
    decay phase done; never below ``floor``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, steps - warmup))
    f = (1.0 - p) ** power if schedule == "poly" else 0.5 * (1.0 + math.cos(math.pi * p))
    return floor + (1.0 - floor) * f


class _Schedule:
    """The recipe's :func:`lr_factor` as a callable for :class:`torch.optim.lr_scheduler.LambdaLR`."""

    def __init__(self, recipe: Recipe) -> None:
        self.kw = {
            "steps": recipe.steps,
            "warmup": recipe.warmup_steps,
            "schedule": recipe.schedule,
            "power": recipe.poly_power,
            "floor": recipe.min_lr_ratio,
        }

    def __call__(self, step: int) -> float:
        return lr_factor(step, **self.kw)


def _param_groups(model: HINet, recipe: Recipe) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("backbone."), p.ndim <= 1)  # (is_backbone, no_decay)
        groups.setdefault(key, []).append(p)
    out = []
    for (is_bb, no_decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": recipe.lr * (recipe.backbone_lr_mult if is_bb else 1.0),
                "weight_decay": 0.0 if no_decay else recipe.weight_decay,
            }
        )
    return out


class _AuxForward(nn.Module):
    """Wraps :meth:`HINet.forward_aux` as ``forward`` so DDP sees (and syncs) it."""

    def __init__(self, net: HINet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image, flow, token_ids, token_mask):  # noqa: D102
        return self.net.forward_aux(image, flow, token_ids, token_mask)


class _ResumableSampler(DistributedSampler):
    """:class:`DistributedSampler` (shuffled, ``seed + epoch``) that can start mid-epoch."""

    def __init__(self, dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


# -- distributed -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dist:
    world: int
    rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_dist(device: str | None) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; valid: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU")
    if world == 1:
        return _Dist(1, 0, torch.device(device, 0) if device == "cuda" else torch.device("cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    dev = torch.device("cuda", local) if device == "cuda" else torch.device("cpu")
    return _Dist(world, rank, dev)


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        dist.barrier()


# -- resumable state (safetensors + JSON, no pickle) -----------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return v


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    py = random.getstate()
    scalars = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": np.random.get_state(legacy=False),
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return _json_value(scalars), tensors


def _set_rng_state(scalars: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    v, state, gauss = scalars["python"]
    random.setstate((v, tuple(state), gauss))
    state_np = dict(scalars["numpy"])
    state_np["state"] = dict(state_np["state"])
    state_np["state"]["key"] = np.asarray(state_np["state"]["key"], dtype=np.uint32)
    np.random.set_state(state_np)
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _save_state(
    folder: Path,
    *,
    model: HINet,
    tokenizer: Tokenizer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    step: int,
    recipe: Recipe,
    best: dict[str, Any],
) -> None:
    """Write the resumable state atomically (a temp folder renamed over ``folder``)."""
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_checkpoint(
        tmp / "model", model=model, tokenizer=tokenizer, meta={"step": step}, dtype="float32"
    )
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in opt["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}/{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = _json_value(value)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    rng_scalars, rng_tensors = _rng_state()
    save_file({k: v.contiguous() for k, v in rng_tensors.items()}, str(tmp / "rng.safetensors"))
    sched = {k: _json_value(v) for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    header = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "step": step,
        "recipe": recipe.to_dict(),
        "optimizer": {"param_groups": _json_value(opt["param_groups"]), "scalars": scalars},
        "scheduler": sched,
        "scaler": _json_value(scaler.state_dict()),
        "rng": rng_scalars,
        "best": best,
        "sha256": {
            "optimizer.safetensors": _sha256(tmp / "optimizer.safetensors"),
            "rng.safetensors": _sha256(tmp / "rng.safetensors"),
        },
    }
    (tmp / "trainer.json").write_text(json.dumps(header, indent=1) + "\n", encoding="utf-8")
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def _read_state(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise ResumeError(f"no resume state at {folder} (expected the 'last' folder of a run)")
    path = folder / "trainer.json"
    if not path.is_file():
        raise ResumeError(f"resume state {folder} has no trainer.json")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResumeError(f"{path} is corrupt (not valid JSON): {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path} is not a {STATE_FORMAT} file")
    if header.get("format_version") != STATE_VERSION:
        raise ResumeError(f"{path}: unsupported format_version {header.get('format_version')!r}")
    for key in ("step", "recipe", "optimizer", "scheduler", "scaler", "rng", "best", "sha256"):
        if key not in header:
            raise ResumeError(f"{path} lacks {key!r}")
    for name, digest in header["sha256"].items():
        f = folder / name
        if not f.is_file():
            raise ResumeError(f"resume state {folder} has no {name}")
        if _sha256(f) != digest:
            raise ResumeError(f"{f} is corrupt: its SHA-256 does not match trainer.json")
    return header


def _load_state(
    folder: Path,
    header: dict[str, Any],
    *,
    model: HINet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        loaded, _, _ = load_checkpoint(folder / "model")
    except CheckpointError as exc:
        raise ResumeError(f"resume state {folder}: model is corrupt: {exc}") from exc
    model.load_state_dict(loaded.state_dict(), strict=True)
    try:
        tensors = load_file(str(folder / "optimizer.safetensors"))
        rng_tensors = load_file(str(folder / "rng.safetensors"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ResumeError(f"resume state {folder}: unreadable tensors: {exc}") from exc
    opt = header["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = t
    for pid, sc in opt["scalars"].items():
        state.setdefault(int(pid), {}).update(sc)
    groups = opt["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ResumeError(f"resume state {folder}: optimizer state does not fit: {exc}") from exc
    sched = scheduler.state_dict()
    sched.update(header["scheduler"])
    scheduler.load_state_dict(sched)
    if header["scaler"]:
        scaler.load_state_dict(header["scaler"])
    _set_rng_state(header["rng"], rng_tensors)


# -- validation ------------------------------------------------------------------------------------
@torch.no_grad()
def validate(
    model: HINet,
    dataset: ReferringTorchDataset,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Score ``model`` on every sample of ``dataset`` (built without augmentation).

    The logits are resized to each sample's original mask resolution with
    :func:`engine.preprocess.logits_to_mask` and scored with
    :class:`training.metrics.ReferringAccumulator`, as :func:`training.evaluate.evaluate` does.

    Returns:
        Split name (``sample.split`` or ``sample.dataset``) -> metric summary, plus ``"overall"``.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    accs: dict[str, ReferringAccumulator] = {}
    overall = ReferringAccumulator()
    n = len(dataset)
    for start in tqdm(range(0, n, batch_size), desc="validate", disable=not progress, leave=False):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        batch = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(batch["image"], batch["flow"], batch["token_ids"], batch["token_mask"])
        logits = logits.float().cpu().numpy()  # (B, 1, H, W)
        for j, it in enumerate(items):
            sample = dataset.samples[int(it["index"])]
            _, pred = logits_to_mask(logits[j], sample.mask.shape)
            split = sample.split or sample.dataset
            key = (sample.video_id, sample.object_id, sample.frame_index)
            accs.setdefault(split, ReferringAccumulator()).add(pred, sample.mask, key=key)
            overall.add(pred, sample.mask, key=key)
    model.train(was_training)
    out = {name: acc.summary() for name, acc in accs.items()}
    out[_VAL_OVERALL] = overall.summary()
    return out


# -- logging ---------------------------------------------------------------------------------------
class _CsvLog:
    """Append rows to a CSV file, writing the header once (columns fixed by the first row)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.is_file():
            with path.open(newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header or None

    def write(self, row: dict[str, Any]) -> None:
        new = self.columns is None
        if new:
            self.columns = list(row)
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run rewrites them)."""
        if not self.path.is_file():
            return
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(r["step"]) <= step]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns or [])
            w.writeheader()
            w.writerows(keep)


def _flat_metrics(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{split}/{k}": v for split, m in metrics.items() for k, v in m.items()}


# -- the run ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        out_dir: The run folder.
        step: Last optimiser step done.
        last_loss: Training loss of the last step.
        losses: Training loss of every step run by this call, in order.
        best: ``{"step": int, "mIoU": float, "metrics": {...}}`` of the best validation, or empty.
        best_checkpoint: The best checkpoint folder (``None`` without validation).
        export: Where the final checkpoint was exported, if asked.
    """

    out_dir: Path
    step: int
    last_loss: float
    losses: list[float]
    best: dict[str, Any]
    best_checkpoint: Path | None
    export: Path | None


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def train(
    recipe: Recipe,
    *,
    out_dir: str | Path,
    resume: bool = False,
    device: str | None = None,
    data_root: str | Path | None = None,
    export: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run (or continue) a training run.

    Args:
        recipe: The :class:`Recipe`.
        out_dir: Run folder (logs, ``last/``, ``best/``).
        resume: Continue from ``out_dir/last`` (must exist and match the recipe).
        device: ``"cpu"`` or ``"cuda"`` (default: CUDA when available). Under ``torchrun`` each
            process uses ``cuda:LOCAL_RANK`` (NCCL) or the CPU (gloo).
        data_root: Dataset root for ``data.kind == "dataset"`` recipes.
        export: Write the best (or, without validation, the last) model here as a float16
            checkpoint.
        stop_after: Stop (with a resumable state) after this step, as if interrupted; the
            schedule still spans ``recipe.steps``.
        progress: Show tqdm bars (rank 0 only).

    Returns:
        :class:`TrainResult`.

    Raises:
        ValueError: bad recipe/data; :class:`ResumeError` for a missing or corrupt state.
    """
    d = _init_dist(device)
    out = Path(out_dir)
    last_dir, best_dir = out / "last", out / "best"
    header: dict[str, Any] | None = None
    if resume:
        header = _read_state(last_dir)
        saved = Recipe.from_dict(header["recipe"]).to_dict()
        now = recipe.to_dict()
        diff = sorted(k for k in now if k not in _RESUME_FREE and now[k] != saved.get(k))
        if diff:
            raise ResumeError(f"recipe differs from the one of {last_dir} in {diff}")
    elif d.main and (last_dir.exists() or (out / "train_log.csv").exists()):
        raise ValueError(f"{out} already holds a run; pass --resume or choose another --out")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    if recipe.batch_size % d.world:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by {d.world} processes")
    per_rank = recipe.batch_size // d.world
    random.seed(recipe.seed)
    np.random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)

    config = recipe.model_config()
    train_parts, val_parts = build_data(recipe, data_root=data_root)
    if header is not None:
        tokenizer = Tokenizer.load(last_dir / "model" / "tokenizer.model")
    else:
        corpus = _expressions(train_parts)
        tokenizer = Tokenizer.train(
            corpus,
            vocab_size=recipe.vocab_size or config.text.vocab_size,
            model_type=recipe.tokenizer_type,
        )
        logger.info("tokenizer: %d pieces from %d expressions", tokenizer.vocab_size, len(corpus))
    train_parts = _drop_unencodable(train_parts, tokenizer, config)
    train_samples = ConcatDataset(train_parts) if len(train_parts) > 1 else train_parts[0]
    val_samples = ConcatDataset(val_parts) if len(val_parts) > 1 else val_parts[0]
    train_ds = ReferringTorchDataset(
        train_samples,
        tokenizer=tokenizer,
        config=config,
        augment=recipe.augment_config(),
        seed=recipe.seed,
    )
    val_ds = ReferringTorchDataset(val_samples, tokenizer=tokenizer, config=config, augment=None)

    model = build_model(config, pretrained_backbone=header is None).to(d.device)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, recipe), betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=_Schedule(recipe))
    amp = bool(recipe.amp and d.device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    step, best = 0, {}
    if header is not None:
        _load_state(
            last_dir, header, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler
        )
        step, best = int(header["step"]), dict(header["best"])
        logger.info("resumed %s at step %d", last_dir, step)
    net: nn.Module = _AuxForward(model)
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None
        )
    weights = recipe.loss_weights()

    sampler = _ResumableSampler(train_ds, num_replicas=d.world, rank=d.rank, seed=recipe.seed)
    steps_per_epoch = sampler.num_samples // per_rank
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_ds)} training samples are fewer than one batch")
    train_log, val_log = _CsvLog(out / "train_log.csv"), _CsvLog(out / "val_log.csv")
    if d.main and header is not None:
        train_log.truncate_after(step)
        val_log.truncate_after(step)
    end = recipe.steps if stop_after is None else min(recipe.steps, stop_after)
    losses: list[float] = []
    last_loss = math.nan
    bar = None
    if d.main and progress:
        from tqdm import tqdm

        bar = tqdm(total=end, initial=step, desc=recipe.name, unit="step", dynamic_ncols=True)
    t_last, logged_at = time.perf_counter(), step
    while step < end:
        epoch, offset = divmod(step, steps_per_epoch)
        sampler.set_position(epoch, offset * per_rank)
        train_ds.set_epoch(epoch)
        loader = DataLoader(
            train_ds,
            batch_size=per_rank,
            sampler=sampler,
            drop_last=True,
            num_workers=recipe.num_workers,
            collate_fn=_collate,
            pin_memory=d.device.type == "cuda",
            # Its own generator: creating an iterator must not draw from the global torch RNG
            # (a resumed run creates one mid-epoch; dropout would then see other numbers).
            generator=torch.Generator().manual_seed(recipe.seed * 1000003 + epoch),
        )
        for batch in loader:
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device_type=d.device.type, dtype=torch.float16, enabled=amp):
                logits, aux = net(
                    batch["image"], batch["flow"], batch["token_ids"], batch["token_mask"]
                )
                parts = total_loss(
                    logits.float(),
                    [a.float() for a in aux],
                    batch["target"],
                    batch["valid"],
                    weights=weights,
                )
            loss = parts["loss"]
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            grad_norm = math.nan
            if recipe.grad_clip > 0:
                scaler.unscale_(optimizer)
                grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip))
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]  # head parameters with weight decay
            scheduler.step()
            step += 1
            last_loss = float(loss.item())
            losses.append(last_loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            if d.main and (step % recipe.log_every == 0 or step == end):
                now = time.perf_counter()
                train_log.write(
                    {
                        "step": step,
                        "epoch": epoch,
                        "lr": lr,
                        "loss": last_loss,
                        "bce": float(parts["bce"].item()),
                        "dice": float(parts["dice"].item()),
                        "aux": float(parts["aux"].item()),
                        "grad_norm": grad_norm,
                        "sec_per_step": (now - t_last) / max(1, step - logged_at),
                    }
                )
                t_last, logged_at = now, step
            if step % recipe.val_every == 0 or step == recipe.steps:
                if d.main:
                    metrics = validate(
                        model, val_ds, batch_size=recipe.val_batch_size, device=d.device, amp=amp
                    )
                    miou = float(metrics[_VAL_OVERALL]["mIoU"])
                    val_log.write({"step": step, **_flat_metrics(metrics)})
                    logger.info(
                        "step %d: val oIoU %.4f mIoU %.4f",
                        step,
                        metrics[_VAL_OVERALL]["oIoU"],
                        miou,
                    )
                    if not best or miou > best["mIoU"]:
                        best = {"step": step, "mIoU": miou, "metrics": metrics}
                        save_checkpoint(
                            best_dir,
                            model=model,
                            tokenizer=tokenizer,
                            meta=_meta(recipe, step, metrics),
                            dtype="float32",
                        )
                _barrier(d)
            if step % recipe.checkpoint_every == 0 or step == end:
                if d.main:
                    _save_state(
                        last_dir,
                        model=model,
                        tokenizer=tokenizer,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        scaler=scaler,
                        step=step,
                        recipe=recipe,
                        best=best,
                    )
                _barrier(d)
            if step >= end:
                break
    if bar is not None:
        bar.close()
    exported: Path | None = None
    if d.main:
        _finish_plots(out)
        if export is not None and step >= recipe.steps:
            if best_dir.is_dir():
                final, tok, meta = load_checkpoint(best_dir)
            else:
                final, tok, meta = model, tokenizer, _meta(recipe, step, {})
            meta = dict(meta)
            meta["exported_from"] = str(best_dir if best_dir.is_dir() else last_dir)
            exported = save_checkpoint(
                export, model=final, tokenizer=tok, meta=meta, dtype="float16"
            )
        summary = {
            "recipe": recipe.to_dict(),
            "step": step,
            "last_loss": last_loss,
            "best": best,
            "export": str(exported) if exported else None,
            "device": str(d.device),
            "world_size": d.world,
            "torch_threads": torch.get_num_threads(),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _barrier(d)
    return TrainResult(
        out_dir=out,
        step=step,
        last_loss=last_loss,
        losses=losses,
        best=best,
        best_checkpoint=best_dir if best_dir.is_dir() else None,
        export=exported,
    )


def _meta(recipe: Recipe, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "recipe": recipe.name,
        "recipe_config": recipe.to_dict(),
        "step": step,
        "val_metrics": _json_value(metrics),
        "trained_with": f"python -m training.train --recipe training/recipes/{recipe.name}.json",
    }


def _finish_plots(out: Path) -> None:
    from training.plots import plot_curves

    try:
        plot_curves(out)
    except ValueError as exc:  # nothing logged yet
        logger.warning("no curves: %s", exc)


# -- CLI -------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--recipe", required=True, help="recipe JSON (training/recipes/*.json)")
    p.add_argument("--out", required=True, help="run folder (logs, last/, best/)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data-root", default=None, help="dataset root for real-data recipes")
    p.add_argument("--export", default=None, help="write the final float16 checkpoint here")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    p.add_argument("--batch-size", type=int, default=None, help="override the global batch size")
    p.add_argument("--num-workers", type=int, default=None, help="override data loader workers")
    p.add_argument("--val-every", type=int, default=None, help="override the validation period")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this step (resumable)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        recipe = load_recipe(args.recipe)
        overrides = {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "val_every": args.val_every,
        }
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides:
            recipe = Recipe.from_dict({**recipe.to_dict(), **overrides})
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        result = train(
            recipe,
            out_dir=args.out,
            resume=args.resume,
            device=args.device,
            data_root=args.data_root,
            export=args.export,
            stop_after=args.stop_after,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best = result.best
    msg = f"done: step {result.step}, last loss {result.last_loss:.4f}"
    if best:
        msg += f", best val mIoU {best['mIoU']:.4f} at step {best['step']}"
    if result.export:
        msg += f", exported {result.export}"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
