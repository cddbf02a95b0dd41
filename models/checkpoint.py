"""Checkpoints: a folder holding the weights, the config and the tokenizer.

Layout::

    <folder>/model.safetensors   the state dict (float32, or float16 storage), without the
                                 pretrained text encoder's pinned weights (see below)
    <folder>/config.json         {"format": ..., "format_version": 2, "config": HINetConfig,
                                  "weights_sha256", "tokenizer_sha256", "dtype", "meta",
                                  "pretrained": {...}}
    <folder>/tokenizer.model     SentencePiece model bytes (``text.encoder == "transformer"``)
    <folder>/tokenizer.json      or MiniLM's WordPiece tokenizer (``"minilm"``)

A model with the pretrained MiniLM text encoder stores only what it trained: MiniLM's frozen
weights (``HINet.pretrained_keys()``) are read from their pinned package
(:mod:`models.pretrained`), and ``pretrained`` records which (package, version, SHA-256), so a
checkpoint never loads against other weights. Version 1 files (no ``pretrained``) still load.

The architecture always comes from ``config.json``; weights are checked against it name by name
and shape by shape, and both files against their SHA-256. Every problem raises
:class:`CheckpointError` (a ``ValueError``) saying what is wrong.

:func:`read_checkpoint_config` is torch-free (ONNX Runtime / TensorRT deployments); it does not
need ``model.safetensors``. torch is imported lazily by :func:`save_checkpoint` and
:func:`load_checkpoint`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.config import HINetConfig
from models.files import CheckpointError, sha256_file
from models.tokenizer import TOKENIZERS, PhraseTokenizer, load_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from models.hinet import HINet

__all__ = [
    "BASELINE_CHECKPOINT",
    "CONFIG_FILE",
    "DEFAULT_CHECKPOINT",
    "FORMAT",
    "FORMAT_VERSION",
    "TOKENIZER_FILES",
    "WEIGHTS_FILE",
    "CheckpointError",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
    "sha256_file",
    "tokenizer_file",
    "trained_on",
    "warm_start",
]

logger = logging.getLogger(__name__)

#: The shipped default model: the grounding prior with the person class, trained on synthetic
#: clips and real frames pseudo-labelled by the prior (``training.pseudo_real``). Every default
#: model in the code, the CLIs and the benchmarks is this constant.
DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "hinet_lite0_prior_person_ref"
#: The one other shipped model: ``hinet_lite0``, trained on synthetic clips only (no prior), the
#: baseline the ablations and the real-footage comparisons start from.
BASELINE_CHECKPOINT = Path(__file__).parent / "weights" / "hinet_lite0"

FORMAT = "hinet-stream-checkpoint"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: Every tokenizer file name a checkpoint may hold (one of them, by ``config.text.encoder``).
TOKENIZER_FILES = tuple(cls.file_name for cls in TOKENIZERS.values())
_DTYPES = ("float32", "float16")
_TOP_KEYS = {
    "format",
    "format_version",
    "config",
    "weights_sha256",
    "tokenizer_sha256",
    "dtype",
    "meta",
    "pretrained",
}


def tokenizer_file(config: HINetConfig) -> str:
    """The tokenizer file name of a model (``tokenizer.model`` or ``tokenizer.json``)."""
    return TOKENIZERS[config.text.encoder].file_name


def _list(names: list[str], n: int = 5) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder} has no {name}")
    return path


def _check_tokenizer(tokenizer: PhraseTokenizer, config: HINetConfig, where: str) -> None:
    want = TOKENIZERS[config.text.encoder]
    if not isinstance(tokenizer, want):
        raise CheckpointError(
            f"{where}: a {config.text.encoder} text encoder needs a {want.__name__}, "
            f"got {type(tokenizer).__name__}"
        )
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
    if header.get("format_version") not in _READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: unsupported format_version {header.get('format_version')!r}; "
            f"this code reads versions {', '.join(map(str, _READABLE_VERSIONS))}"
        )
    if header["format_version"] == 1:  # before pretrained parts: nothing pretrained
        header = {**header, "pretrained": {}}
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


def read_checkpoint_config(
    path: str | Path,
) -> tuple[HINetConfig, PhraseTokenizer, dict[str, Any]]:
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
    tok_path = _file(folder, tokenizer_file(config))
    digest = sha256_file(tok_path)
    if digest != header["tokenizer_sha256"]:
        raise CheckpointError(
            f"{tok_path} is corrupt or was replaced: sha256 {digest[:12]}... does not match "
            f"the {header['tokenizer_sha256'][:12]}... recorded in {CONFIG_FILE}"
        )
    try:
        tokenizer = load_tokenizer(config.text.encoder, tok_path)
    except ValueError as exc:
        raise CheckpointError(f"{tok_path}: {exc}") from exc
    _check_tokenizer(tokenizer, config, str(folder))
    return config, tokenizer, dict(header["meta"])


def save_checkpoint(
    path: str | Path,
    *,
    model: HINet,
    tokenizer: PhraseTokenizer,
    meta: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a checkpoint folder (created if needed; the three files are overwritten).

    The pretrained text encoder's pinned weights (``model.pretrained_keys()``) are not written.

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
    skip = set(model.pretrained_keys())
    for name, t in model.state_dict().items():
        if name in skip:
            continue
        t = t.detach().to("cpu")
        if dtype == "float16" and t.is_floating_point():
            t = t.to(torch.float16)
        tensors[name] = t.contiguous().clone()
    weights = folder / WEIGHTS_FILE
    save_file(tensors, str(weights))
    tok_path = folder / tokenizer_file(config)
    tokenizer.save(tok_path)
    for name in TOKENIZER_FILES:  # a stale tokenizer of another kind must not linger
        if name != tok_path.name and (folder / name).exists():
            (folder / name).unlink()
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "weights_sha256": sha256_file(weights),
        "tokenizer_sha256": sha256_file(tok_path),
        "dtype": dtype,
        "meta": meta,
        "pretrained": _pretrained_record(config),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
    logger.info("saved checkpoint %s (%s)", folder, dtype)
    return folder


def load_checkpoint(
    path: str | Path = DEFAULT_CHECKPOINT,
) -> tuple[HINet, PhraseTokenizer, dict[str, Any]]:
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
    _check_pretrained(header, config, folder)
    model = HINet(
        config=config, pretrained_backbone=False, pretrained_text=bool(header["pretrained"])
    )
    pinned = set(model.pretrained_keys())
    expected = {k: v for k, v in model.state_dict().items() if k not in pinned}
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
    loaded = model.load_state_dict(state, strict=False)
    if sorted(loaded.missing_keys) != sorted(pinned) or loaded.unexpected_keys:  # pragma: no cover
        raise CheckpointError(f"{weights}: state does not cover the model exactly")
    model.eval()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckpointError(f"{weights} holds non-finite weights")
    return model, tokenizer, meta


def _pretrained_record(config: HINetConfig) -> dict[str, Any]:
    """What ``config.json`` records of the pretrained parts a model reads from packages."""
    if config.text.encoder != "minilm":
        return {}
    from models.pretrained import MINILM, PERSON_SEGMENTER

    record = {"text": MINILM.record()}
    if getattr(config, "prior_person", False):
        record["person"] = PERSON_SEGMENTER.record()
    return record


def _check_pretrained(header: dict[str, Any], config: HINetConfig, folder: Path) -> None:
    """The checkpoint names exactly the pretrained weights this code pins."""
    want = _pretrained_record(config)
    if header["pretrained"] != want:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: the checkpoint was trained on pretrained weights "
            f"{header['pretrained'] or 'none'}, this code provides {want or 'none'}"
        )


def trained_on(meta: dict[str, Any]) -> str:
    """One sentence for people: what a checkpoint was trained on, from its ``meta``."""
    recipe = meta.get("recipe_config") or {}
    data = recipe.get("data") or {}
    steps = meta.get("step")
    start = ""
    if recipe.get("init_from"):
        init = Path(recipe["init_from"])  # a run's best/ or last/: name the run
        start = f" on top of {init.parent.name if init.name in ('best', 'last') else init.name}"
    how = f" (recipe {meta['recipe']}, {steps} steps{start})" if meta.get("recipe") else ""
    if data.get("kind") == "synthetic" and data.get("pseudo_real"):
        share = data["pseudo_real"].get("share")
        part = f" ({100 * share:.0f} % of each batch)" if share else ""
        referent = ""
        if any(p.startswith("referent_in") for p in recipe.get("train_only") or ()):
            referent = (
                " Then it learnt to read the instance a COCO detector found and the phrase's "
                "words chose, as a map, from simulated detections (every other weight kept)."
            )
        return (
            f"This model was trained on synthetic clips and on real frames{part} pseudo-labelled "
            f"by its grounding prior{how}. The prior brings ImageNet's 1000 categories and a "
            "person map from pretrained models; it finds people, vehicles and many objects on "
            f"real footage, with coarse masks, and is not yet reliable on small objects.{referent}"
        )
    if data.get("kind") == "synthetic":
        return (
            f"This model was trained on synthetic clips only{how}: coloured geometric shapes "
            "that differ in shape, size, colour and motion. It follows such phrases; on real "
            "footage it does not yet know real objects (people, cars, animals)."
        )
    if data.get("kind") == "dataset":
        return f"This model was trained on the {data.get('name', 'a real')} dataset{how}."
    return "What this model was trained on is not recorded in its checkpoint."


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
    import torch

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
