"""Checkpoints: a folder holding the weights, the config and the tokenizer.

Layout::

    <folder>/model.safetensors   the state dict (float32, or float16 storage)
    <folder>/config.json         {"format": ..., "format_version": 1, "config": HINetConfig,
                                  "weights_sha256", "tokenizer_sha256", "dtype", "meta"}
    <folder>/tokenizer.model     SentencePiece model bytes

The architecture always comes from ``config.json``; weights are checked against it name by name
and shape by shape, and both files against their SHA-256. Every problem raises
:class:`CheckpointError` (a ``ValueError``) saying what is wrong.

:func:`read_checkpoint_config` is torch-free (ONNX Runtime / TensorRT deployments); it does not
need ``model.safetensors``. torch is imported lazily by :func:`save_checkpoint` and
:func:`load_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.config import HINetConfig
from models.tokenizer import Tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from models.hinet import HINet

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_CHECKPOINT",
    "FORMAT",
    "FORMAT_VERSION",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
    "sha256_file",
]

logger = logging.getLogger(__name__)

#: The shipped default model.
DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "hinet_lite0"

FORMAT = "hinet-stream-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
_DTYPES = ("float32", "float16")
_TOP_KEYS = {
    "format",
    "format_version",
    "config",
    "weights_sha256",
    "tokenizer_sha256",
    "dtype",
    "meta",
}


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupt or does not match its config."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (the one file hash of the project)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _list(names: list[str], n: int = 5) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder} has no {name}")
    return path


def _check_tokenizer(tokenizer: Tokenizer, config: HINetConfig, where: str) -> None:
    if tokenizer.vocab_size > config.text.vocab_size:
        raise CheckpointError(
            f"{where}: tokenizer has {tokenizer.vocab_size} pieces but the model embeds only "
            f"config.text.vocab_size={config.text.vocab_size}"
        )


def _read_header(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    path = _file(folder, CONFIG_FILE)
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file (format={header.get('format')!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported format_version {header.get('format_version')!r}; "
            f"this code reads version {FORMAT_VERSION}"
        )
    missing, unknown = sorted(_TOP_KEYS - set(header)), sorted(set(header) - _TOP_KEYS)
    if missing or unknown:
        raise CheckpointError(f"{path} keys do not match: missing {missing}, unknown {unknown}")
    if header["dtype"] not in _DTYPES:
        raise CheckpointError(
            f"{path}: unknown dtype {header['dtype']!r}; valid: {', '.join(_DTYPES)}"
        )
    if not isinstance(header["meta"], dict):
        raise CheckpointError(f"{path}: meta must be a JSON object")
    return header


def _parse_config(header: dict[str, Any], folder: Path) -> HINetConfig:
    try:
        return HINetConfig.from_dict(header["config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: bad config: {exc}") from exc


def read_checkpoint_config(path: str | Path) -> tuple[HINetConfig, Tokenizer, dict[str, Any]]:
    """Read config, tokenizer and meta of a checkpoint folder without torch.

    ``model.safetensors`` is neither needed nor read (deployments may ship only the config
    and tokenizer next to an ONNX or TensorRT model).

    Args:
        path: Checkpoint folder.

    Returns:
        ``(config, tokenizer, meta)``.

    Raises:
        CheckpointError: missing folder/file, invalid JSON, config mismatch, tokenizer hash
            mismatch or corrupt tokenizer.
    """
    folder = Path(path)
    header = _read_header(folder)
    config = _parse_config(header, folder)
    tok_path = _file(folder, TOKENIZER_FILE)
    digest = sha256_file(tok_path)
    if digest != header["tokenizer_sha256"]:
        raise CheckpointError(
            f"{tok_path} is corrupt or was replaced: sha256 {digest[:12]}... does not match "
            f"the {header['tokenizer_sha256'][:12]}... recorded in {CONFIG_FILE}"
        )
    try:
        tokenizer = Tokenizer.load(tok_path)
    except ValueError as exc:
        raise CheckpointError(f"{tok_path}: {exc}") from exc
    _check_tokenizer(tokenizer, config, str(folder))
    return config, tokenizer, dict(header["meta"])


def save_checkpoint(
    path: str | Path,
    *,
    model: HINet,
    tokenizer: Tokenizer,
    meta: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a checkpoint folder (created if needed; the three files are overwritten).

    Args:
        path: Folder to write.
        model: The network; its ``config`` is saved.
        tokenizer: The tokenizer the model was trained with.
        meta: Optional JSON-able information (training run, metrics, ...).
        dtype: ``"float32"`` or ``"float16"`` storage of floating tensors (fp16 halves the size;
            :func:`load_checkpoint` casts back to float32).

    Returns:
        The folder path.
    """
    import torch
    from safetensors.torch import save_file

    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        json.dumps(meta)
    except TypeError as exc:
        raise ValueError(f"meta must be JSON-serialisable: {exc}") from exc
    config = model.config
    _check_tokenizer(tokenizer, config, "save_checkpoint")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if dtype == "float16" and t.is_floating_point():
            t = t.to(torch.float16)
        tensors[name] = t.contiguous().clone()
    weights = folder / WEIGHTS_FILE
    save_file(tensors, str(weights))
    tok_path = folder / TOKENIZER_FILE
    tokenizer.save(tok_path)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "weights_sha256": sha256_file(weights),
        "tokenizer_sha256": sha256_file(tok_path),
        "dtype": dtype,
        "meta": meta,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
    logger.info("saved checkpoint %s (%s)", folder, dtype)
    return folder


def load_checkpoint(
    path: str | Path = DEFAULT_CHECKPOINT,
) -> tuple[HINet, Tokenizer, dict[str, Any]]:
    """Load a checkpoint folder into a float32 model in eval mode.

    Args:
        path: Checkpoint folder (default: the shipped :data:`DEFAULT_CHECKPOINT`).

    Returns:
        ``(model, tokenizer, meta)``.

    Raises:
        CheckpointError: anything missing, corrupt or mismatched (the message says what).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from models.hinet import HINet

    folder = Path(path)
    config, tokenizer, meta = read_checkpoint_config(folder)
    header = _read_header(folder)
    weights = _file(folder, WEIGHTS_FILE)
    digest = sha256_file(weights)
    if digest != header["weights_sha256"]:
        raise CheckpointError(
            f"{weights} is corrupt or was replaced: sha256 {digest[:12]}... does not match "
            f"the {header['weights_sha256'][:12]}... recorded in {CONFIG_FILE}"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from exc
    model = HINet(config=config, pretrained_backbone=False)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match its config ({config.backbone}): "
            f"missing tensors [{_list(missing)}], unexpected tensors [{_list(unexpected)}]"
        )
    for name, ref in expected.items():
        got = state[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{weights}: tensor {name} has shape {tuple(got.shape)}, "
                f"the config needs {tuple(ref.shape)}"
            )
        if got.is_floating_point() != ref.is_floating_point():
            raise CheckpointError(
                f"{weights}: tensor {name} has dtype {got.dtype}, need {ref.dtype}"
            )
        state[name] = got.to(ref.dtype)
    model.load_state_dict(state, strict=True)
    model.eval()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckpointError(f"{weights} holds non-finite weights")
    return model, tokenizer, meta
