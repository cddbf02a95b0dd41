"""The plumbing of a training run: processes, a sampler that resumes mid-epoch, the CSV logs.

Processes: one, or several under ``torchrun`` (DistributedDataParallel, NCCL on CUDA, gloo on
the CPU). :mod:`training.train` holds the run itself.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

__all__ = [
    "AuxForward",
    "CsvLog",
    "Dist",
    "ResumableSampler",
    "barrier",
    "epoch_loader",
    "init_dist",
    "param_groups",
]


class ResumableSampler(DistributedSampler):
    """:class:`DistributedSampler` (shuffled, ``seed + epoch``) that can start mid-epoch."""

    def __init__(self, dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Shuffle for ``epoch`` and start at sample ``start`` of this rank's share."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


# -- processes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    """This process's place in the run: world size, rank and device."""

    world: int
    rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, validates and saves."""
        return self.rank == 0


def init_dist(device: str | None) -> Dist:
    """Join the torchrun process group (if any) and pick the device (default: CUDA if present).

    Raises:
        ValueError: an unknown device, or CUDA asked where torch sees none.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; valid: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU")
    if world == 1:
        return Dist(1, 0, torch.device(device, 0) if device == "cuda" else torch.device("cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    dev = torch.device("cuda", local) if device == "cuda" else torch.device("cpu")
    return Dist(world, rank, dev)


def barrier(d: Dist) -> None:
    """Wait for every process (a no-op in a one-process run)."""
    if d.world > 1:
        dist.barrier()


# -- logging ---------------------------------------------------------------------------------------
class CsvLog:
    """Append rows to a CSV file, writing the header once (columns fixed by the first row)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.is_file():
            with path.open(newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header or None

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (the first row fixes the columns)."""
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


# -- the model and its optimiser ---------------------------------------------------------------
def param_groups(model: Any, recipe: Any) -> list[dict[str, Any]]:
    """AdamW groups: backbone at ``backbone_lr_mult``, no weight decay on biases and norms."""
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


class AuxForward(nn.Module):
    """Wraps :meth:`HINet.forward_aux` as ``forward`` so DDP sees (and syncs) it."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, image, flow, token_ids, token_mask, prior=None, prior_sim=None,  # noqa: D102
                referent=None):  # fmt: skip
        return self.net.forward_aux(image, flow, token_ids, token_mask, prior, prior_sim, referent)


# -- batches ---------------------------------------------------------------------------------------
def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def epoch_loader(
    dataset: Any,
    sampler: ResumableSampler,
    *,
    epoch: int,
    batch_size: int,
    recipe: Any,
    device: torch.device,
) -> DataLoader:
    """The batches of one epoch, from where ``sampler`` starts (its own RNG, see below)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=recipe.num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        # Its own generator: creating an iterator must not draw from the global torch RNG
        # (a resumed run creates one mid-epoch; dropout would then see other numbers).
        generator=torch.Generator().manual_seed(recipe.seed * 1000003 + epoch),
    )
