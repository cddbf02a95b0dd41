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
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler

from engine.latency import json_safe
from models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from models.hinet import HINet, build_model
from training.losses import total_loss
from training.recipe import (
    Recipe,
    Schedule,
    build_data,
    drop_unencodable,
    load_recipe,
    make_tokenizer,
)
from training.state import RESUME_FREE, ResumeError, load_state, read_state, save_state
from training.torch_data import ReferringTorchDataset, trim_tokens
from training.validation import VAL_OVERALL, validate

__all__ = ["TrainResult", "main", "train"]

logger = logging.getLogger(__name__)


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

    def forward(self, image, flow, token_ids, token_mask, prior=None, prior_sim=None):  # noqa: D102
        return self.net.forward_aux(image, flow, token_ids, token_mask, prior, prior_sim)


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
        header = read_state(last_dir)
        saved = Recipe.from_dict(header["recipe"]).to_dict()
        now = recipe.to_dict()
        diff = sorted(k for k in now if k not in RESUME_FREE and now[k] != saved.get(k))
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
        tokenizer = read_checkpoint_config(last_dir / "model")[1]
    else:
        tokenizer = make_tokenizer(recipe, config, train_parts)
    train_parts = drop_unencodable(train_parts, tokenizer, config)
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

    model = build_model(config, pretrained_backbone=header is None)
    warm = warm_start(model, recipe.init_from) if header is None and recipe.init_from else []
    model = model.to(d.device)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, recipe), betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=Schedule(recipe))
    amp = bool(recipe.amp and d.device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    step, best = 0, {}
    if header is not None:
        load_state(
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
            batch = trim_tokens(batch)
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device_type=d.device.type, dtype=torch.float16, enabled=amp):
                logits, aux = net(
                    batch["image"],
                    batch["flow"],
                    batch["token_ids"],
                    batch["token_mask"],
                    batch.get("prior"),  # the simulated grounding prior (config.prior)
                    batch.get("prior_sim"),
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
                    miou = float(metrics[VAL_OVERALL]["mIoU"])
                    val_log.write({"step": step, **_flat_metrics(metrics)})
                    logger.info(
                        "step %d: val oIoU %.4f mIoU %.4f",
                        step,
                        metrics[VAL_OVERALL]["oIoU"],
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
                    save_state(
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
            "warm_started_tensors": len(warm),
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


def warm_start(model: HINet, source: str | Path) -> list[str]:
    """Copy ``source``'s tensors into ``model`` where name and shape match.

    The text side (``text.*``) is copied only when both use the same text config (a model
    with another text encoder or vocabulary starts its text side from scratch).

    Returns:
        The copied keys.

    Raises:
        ValueError: the checkpoint cannot be read.
    """
    path = Path(source)
    if not path.is_absolute() and not path.exists():  # recipes name folders of the repository
        path = Path(__file__).resolve().parents[1] / path
    try:
        donor, _, _ = load_checkpoint(path)
    except CheckpointError as exc:
        raise ValueError(f"init_from {source}: {exc}") from exc
    own, theirs = model.state_dict(), donor.state_dict()
    same_text = donor.config.text == model.config.text
    pinned = set(model.pretrained_keys())
    copied = [
        k
        for k, v in theirs.items()
        if (same_text or not k.startswith("text."))
        and k not in pinned
        and k in own
        and own[k].shape == v.shape
    ]
    with torch.no_grad():
        for k in copied:
            own[k].copy_(theirs[k])
    skipped = sorted(
        k for k in own if k not in copied and k not in pinned and not k.startswith("text.")
    )
    logger.info(
        "warm start from %s: %d tensors copied; %d non-text tensors keep their init%s",
        source, len(copied), len(skipped), f" (e.g. {skipped[:3]})" if skipped else "",
    )  # fmt: skip
    return copied


def _meta(recipe: Recipe, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "recipe": recipe.name,
        "recipe_config": recipe.to_dict(),
        "step": step,
        "val_metrics": json_safe(metrics),
        "trained_with": f"python -m training.train --recipe training/recipes/{recipe.name}.json",
    }


def _finish_plots(out: Path) -> None:
    from training.plots import plot_curves

    try:
        plot_curves(out)
    except ValueError as exc:  # nothing logged yet
        logger.warning("no curves: %s", exc)


# -- CLI -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
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
    args = build_parser().parse_args(argv)
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
