"""Train HINet from a recipe file: AdamW, warm-up + poly/cosine schedule, BCE + Dice, DDP, resume.

CLI (thin wrapper over :func:`train`)::

    python -m training.train --recipe training/recipes/synthetic_lite0.json --out runs/lite0 \
        --threads 2 --fp16-checkpoint models/weights/hinet_lite0
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

``--fp16-checkpoint DIR`` finally writes the best checkpoint (float16 storage) to ``DIR``.

Determinism: the batch order is a function of ``(seed, epoch)`` (a
:class:`torch.utils.data.DistributedSampler` that can start mid-epoch) and the augmentation of
``(seed, epoch, index)``; resuming restores weights, optimiser, scheduler, scaler and every RNG,
so on the same device and thread count the continued run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset

from engine.latency import json_safe
from models.checkpoint import (
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
    warm_start,
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
from training.run_infra import (
    AuxForward,
    CsvLog,
    Dist,
    ResumableSampler,
    barrier,
    epoch_loader,
    init_dist,
    param_groups,
)
from training.state import RESUME_FREE, ResumeError, load_state, read_state, save_state
from training.torch_data import ReferringTorchDataset, trim_tokens
from training.validation import VAL_OVERALL, validate

__all__ = ["TrainResult", "main", "train"]

logger = logging.getLogger(__name__)


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


@dataclass
class _Run:
    """Everything one training run holds between steps (built by :func:`_open_run`)."""

    recipe: Recipe
    d: Dist
    out: Path
    tokenizer: Any
    train_ds: ReferringTorchDataset
    val_ds: ReferringTorchDataset
    model: HINet
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp: bool
    step: int
    best: dict[str, Any]
    warm: list[str]
    weights: Any

    @property
    def last_dir(self) -> Path:
        return self.out / "last"

    @property
    def best_dir(self) -> Path:
        return self.out / "best"


def _check_run_folder(recipe: Recipe, out: Path, resume: bool, d: Dist) -> dict[str, Any] | None:
    """The saved state's header when resuming (checked against ``recipe``), else ``None``.

    Raises:
        ResumeError: no state to resume, or a recipe that differs from the saved one.
        ValueError: a new run into a folder that already holds one.
    """
    if resume:
        header = read_state(out / "last")
        saved = Recipe.from_dict(header["recipe"]).to_dict()
        now = recipe.to_dict()
        diff = sorted(k for k in now if k not in RESUME_FREE and now[k] != saved.get(k))
        if diff:
            raise ResumeError(f"recipe differs from the one of {out / 'last'} in {diff}")
        return header
    if d.main and ((out / "last").exists() or (out / "train_log.csv").exists()):
        raise ValueError(f"{out} already holds a run; pass --resume or choose another --out")
    return None


def _open_run(
    recipe: Recipe, out: Path, *, resume: bool, device: str | None, data_root: str | Path | None
) -> _Run:
    """Seed, data, tokenizer, model, optimiser and schedule: new, or as the saved state left them.

    The order of every random draw is fixed here, so a resumed run continues bit-identically.
    """
    d = init_dist(device)
    header = _check_run_folder(recipe, out, resume, d)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    if recipe.batch_size % d.world:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by {d.world} processes")
    random.seed(recipe.seed)
    np.random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)

    config = recipe.model_config()
    train_parts, val_parts = build_data(recipe, data_root=data_root)
    if header is not None:
        tokenizer = read_checkpoint_config(out / "last" / "model")[1]
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
    if recipe.train_only:  # the rest frozen as loaded (logged)
        model.train_only(recipe.train_only)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, recipe), betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=Schedule(recipe))
    amp = bool(recipe.amp and d.device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    step, best = 0, {}
    if header is not None:
        load_state(out / "last", header, model=model, optimizer=optimizer, scheduler=scheduler,
                   scaler=scaler)  # fmt: skip
        step, best = int(header["step"]), dict(header["best"])
        logger.info("resumed %s at step %d", out / "last", step)
    net: nn.Module = AuxForward(model)
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None
        )
    return _Run(recipe=recipe, d=d, out=out, tokenizer=tokenizer, train_ds=train_ds,
                val_ds=val_ds, model=model, net=net, optimizer=optimizer, scheduler=scheduler,
                scaler=scaler, amp=amp, step=step, best=best, warm=warm,
                weights=recipe.loss_weights())  # fmt: skip


def _train_step(run: _Run, batch: dict[str, torch.Tensor]) -> tuple[dict, float, float]:
    """One optimiser step on ``batch``: ``(loss parts, learning rate used, grad norm)``."""
    batch = trim_tokens(batch)
    batch = {k: v.to(run.d.device, non_blocking=True) for k, v in batch.items()}
    with torch.autocast(device_type=run.d.device.type, dtype=torch.float16, enabled=run.amp):
        logits, aux = run.net(
            batch["image"],
            batch["flow"],
            batch["token_ids"],
            batch["token_mask"],
            batch.get("prior"),  # the simulated grounding prior (config.prior)
            batch.get("prior_sim"),
            batch.get("referent"),  # the simulated detector's referent map (config.referent)
        )
        parts = total_loss(
            logits.float(),
            [a.float() for a in aux],
            batch["target"],
            batch["valid"],
            weights=run.weights,
        )
    loss = parts["loss"]
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss.item()} at step {run.step}")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    grad_norm = math.nan
    if run.recipe.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        grad_norm = float(nn.utils.clip_grad_norm_(run.model.parameters(), run.recipe.grad_clip))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    lr = run.optimizer.param_groups[0]["lr"]  # head parameters with weight decay
    run.scheduler.step()
    run.step += 1
    return parts, lr, grad_norm


def _validate(run: _Run, val_log: CsvLog) -> None:
    """Score the validation set, log it, and keep the checkpoint if it is the best so far."""
    recipe = run.recipe
    metrics = validate(
        run.model, run.val_ds, batch_size=recipe.val_batch_size, device=run.d.device, amp=run.amp
    )
    miou = float(metrics[VAL_OVERALL]["mIoU"])
    val_log.write({"step": run.step, **_flat_metrics(metrics)})
    logger.info("step %d: val oIoU %.4f mIoU %.4f", run.step, metrics[VAL_OVERALL]["oIoU"], miou)
    # a tie goes to the later step (a train_only run the validation cannot see ties every time)
    if not run.best or miou >= run.best["mIoU"]:
        run.best = {"step": run.step, "mIoU": miou, "metrics": metrics}
        save_checkpoint(run.best_dir, model=run.model, tokenizer=run.tokenizer,
                        meta=_meta(recipe, run.step, metrics), dtype="float32")  # fmt: skip


def _save_last(run: _Run) -> None:
    save_state(run.last_dir, model=run.model, tokenizer=run.tokenizer, optimizer=run.optimizer,
               scheduler=run.scheduler, scaler=run.scaler, step=run.step, recipe=run.recipe,
               best=run.best)  # fmt: skip


def _finish(run: _Run, export: str | Path | None, last_loss: float) -> Path | None:
    """Plots, the float16 export (when asked and the run is complete) and ``summary.json``."""
    _finish_plots(run.out)
    exported: Path | None = None
    if export is not None and run.step >= run.recipe.steps:
        if run.best_dir.is_dir():
            final, tok, meta = load_checkpoint(run.best_dir)
        else:
            final, tok, meta = run.model, run.tokenizer, _meta(run.recipe, run.step, {})
        meta = dict(meta)
        meta["exported_from"] = str(run.best_dir if run.best_dir.is_dir() else run.last_dir)
        exported = save_checkpoint(export, model=final, tokenizer=tok, meta=meta, dtype="float16")
    summary = {
        "recipe": run.recipe.to_dict(),
        "step": run.step,
        "last_loss": last_loss,
        "best": run.best,
        "export": str(exported) if exported else None,
        "device": str(run.d.device),
        "world_size": run.d.world,
        "torch_threads": torch.get_num_threads(),
        "warm_started_tensors": len(run.warm),
    }
    (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return exported


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
    out = Path(out_dir)
    run = _open_run(recipe, out, resume=resume, device=device, data_root=data_root)
    d, per_rank = run.d, recipe.batch_size // run.d.world
    sampler = ResumableSampler(run.train_ds, num_replicas=d.world, rank=d.rank, seed=recipe.seed)
    steps_per_epoch = sampler.num_samples // per_rank
    if steps_per_epoch < 1:
        raise ValueError(f"{len(run.train_ds)} training samples are fewer than one batch")
    train_log, val_log = CsvLog(out / "train_log.csv"), CsvLog(out / "val_log.csv")
    if d.main and resume:
        train_log.truncate_after(run.step)
        val_log.truncate_after(run.step)
    end = recipe.steps if stop_after is None else min(recipe.steps, stop_after)
    losses: list[float] = []
    last_loss = math.nan
    bar = None
    if d.main and progress:
        from tqdm import tqdm

        bar = tqdm(total=end, initial=run.step, desc=recipe.name, unit="step", dynamic_ncols=True)
    t_last, logged_at = time.perf_counter(), run.step
    while run.step < end:
        epoch, offset = divmod(run.step, steps_per_epoch)
        sampler.set_position(epoch, offset * per_rank)
        run.train_ds.set_epoch(epoch)
        loader = epoch_loader(run.train_ds, sampler, epoch=epoch, batch_size=per_rank,
                              recipe=recipe, device=d.device)  # fmt: skip
        for batch in loader:
            parts, lr, grad_norm = _train_step(run, batch)
            step = run.step
            last_loss = float(parts["loss"].item())
            losses.append(last_loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            if d.main and (step % recipe.log_every == 0 or step == end):
                now = time.perf_counter()
                train_log.write({
                    "step": step, "epoch": epoch, "lr": lr, "loss": last_loss,
                    "bce": float(parts["bce"].item()), "dice": float(parts["dice"].item()),
                    "aux": float(parts["aux"].item()), "grad_norm": grad_norm,
                    "sec_per_step": (now - t_last) / max(1, step - logged_at),
                })  # fmt: skip
                t_last, logged_at = now, step
            if step % recipe.val_every == 0 or step == recipe.steps:
                if d.main:
                    _validate(run, val_log)
                barrier(d)
            if step % recipe.checkpoint_every == 0 or step == end:
                if d.main:
                    _save_last(run)
                barrier(d)
            if step >= end:
                break
    if bar is not None:
        bar.close()
    exported = _finish(run, export, last_loss) if d.main else None
    barrier(d)
    return TrainResult(
        out_dir=out,
        step=run.step,
        last_loss=last_loss,
        losses=losses,
        best=run.best,
        best_checkpoint=run.best_dir if run.best_dir.is_dir() else None,
        export=exported,
    )


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
    p.add_argument(
        "--fp16-checkpoint", default=None, help="write the best checkpoint here (float16 storage)"
    )
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
            export=args.fp16_checkpoint,
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
