"""The resumable state of a training run: safetensors + JSON, no pickle anywhere.

``<run>/last/`` holds ``model/`` (a :func:`models.checkpoint.save_checkpoint` folder with the
tokenizer, float32), ``optimizer.safetensors`` + ``rng.safetensors`` (tensors) and
``trainer.json`` (step, scalar optimiser state, scheduler, AMP scaler, Python/numpy RNG states,
SHA-256 of the tensor files). :func:`save_state` writes it atomically; :func:`read_state`
verifies it; :func:`load_state` restores everything, so a resumed run continues bit-identically
on the same device and thread count.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.latency import json_safe
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sha256_file
from models.hinet import HINet
from models.tokenizer import Tokenizer
from training.recipe import Recipe

__all__ = ["RESUME_FREE", "STATE_FORMAT", "ResumeError", "load_state", "read_state", "save_state"]

#: ``format`` of ``trainer.json``.
STATE_FORMAT = "hinet-stream-train-state"
STATE_VERSION = 1
#: Recipe fields that may differ when resuming (they do not change the optimisation).
RESUME_FREE = {"val_every", "checkpoint_every", "log_every", "num_workers", "val_batch_size"}


class ResumeError(ValueError):
    """A resume state is missing, corrupt or belongs to a different recipe."""


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
    return json_safe(scalars), tensors


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


def save_state(
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
                scalars.setdefault(str(pid), {})[key] = json_safe(value)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    rng_scalars, rng_tensors = _rng_state()
    save_file({k: v.contiguous() for k, v in rng_tensors.items()}, str(tmp / "rng.safetensors"))
    sched = {k: json_safe(v) for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    header = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "step": step,
        "recipe": recipe.to_dict(),
        "optimizer": {"param_groups": json_safe(opt["param_groups"]), "scalars": scalars},
        "scheduler": sched,
        "scaler": json_safe(scaler.state_dict()),
        "rng": rng_scalars,
        "best": best,
        "sha256": {
            "optimizer.safetensors": sha256_file(tmp / "optimizer.safetensors"),
            "rng.safetensors": sha256_file(tmp / "rng.safetensors"),
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


def read_state(folder: Path) -> dict[str, Any]:
    """Read and verify ``trainer.json`` and the tensor files' hashes of a ``last/`` folder.

    Raises:
        ResumeError: missing, corrupt or of another format.
    """
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
        if sha256_file(f) != digest:
            raise ResumeError(f"{f} is corrupt: its SHA-256 does not match trainer.json")
    return header


def load_state(
    folder: Path,
    header: dict[str, Any],
    *,
    model: HINet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> None:
    """Restore weights, optimiser, scheduler, AMP scaler and every RNG from a ``last/`` folder.

    Raises:
        ResumeError: the state does not fit the model/optimiser or is unreadable.
    """
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
