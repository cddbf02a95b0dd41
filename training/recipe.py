"""A training recipe (one JSON file), the data it names and its learning-rate schedule.

A recipe (``training/recipes/*.json``) fixes the model preset and overrides, the data, the
optimiser, the schedule, the loss, the augmentation and the seed; see :class:`Recipe`.
:func:`build_data` opens its training and validation samples (never the test set).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.config import HINetConfig, build_config
from models.tokenizer import PhraseTokenizer, Tokenizer, WordPieceTokenizer
from training.losses import LossWeights
from training.sample import Sample
from training.torch_data import AugmentConfig

__all__ = [
    "DATA_KINDS",
    "SCHEDULES",
    "Recipe",
    "Schedule",
    "Subset",
    "build_data",
    "drop_unencodable",
    "expressions",
    "load_recipe",
    "lr_factor",
    "make_tokenizer",
]

logger = logging.getLogger(__name__)

#: Learning-rate schedules after the linear warm-up.
SCHEDULES = ("poly", "cosine")
#: ``data.kind`` values of a recipe.
DATA_KINDS = ("synthetic", "dataset")
#: Synthetic clips per split rendered for the tokenizer corpus (the grammar's vocabulary is
#: small; rendering every training clip would take minutes).
_CORPUS_CLIPS = 600


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
        vocab_size: SentencePiece vocabulary size (``None``: the model's ``text.vocab_size``);
            unused with the pretrained ``minilm`` text encoder (its WordPiece vocabulary is
            fixed).
        tokenizer_type: SentencePiece model type (``transformer`` text encoder only).
        init_from: A checkpoint folder whose tensors initialise the model where name and shape
            match, except the text encoder (``text.*``), which keeps its own (pretrained)
            initialisation: a warm start of the vision side (the copied keys are logged and
            recorded in ``summary.json``). ``None``: ImageNet backbone, random heads.
        train_only: Train only the parameters whose names start with one of these prefixes
            (e.g. ``["referent_in."]``); the rest stay as loaded, their BatchNorm statistics
            too (:meth:`models.hinet.HINet.train_only`). Empty: train everything.
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
    init_from: str | None = None
    train_only: tuple[str, ...] = ()
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
        if isinstance(self.train_only, str) or not all(
            isinstance(p, str) and p for p in self.train_only
        ):
            raise ValueError(f"train_only must be a list of name prefixes, got {self.train_only!r}")
        object.__setattr__(self, "train_only", tuple(self.train_only))
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

    known = {"kind", "size", "train_clips", "val_clips", "spec", "seed_offset", "pseudo_real"}
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


def _pseudo_real(spec: dict[str, Any], synthetic: int) -> Sequence:
    """Pseudo-labelled real frames (:mod:`training.pseudo_real`), repeated to ``share`` of an epoch.

    ``{"path": "runs/pseudo_real_v1.npz", "share": 0.25}``; the file is built first if absent
    (with the person class in the teacher when ``"person": true``).
    """
    from training.pseudo_real import PseudoRealDataset, Repeated, build

    unknown = sorted(set(spec) - {"path", "share", "person"})
    if unknown or "path" not in spec:
        raise ValueError(
            f"data.pseudo_real needs 'path' (and optionally 'share', 'person'), got {spec}"
        )
    share = float(spec.get("share", 0.25))
    if not 0.0 < share < 1.0:
        raise ValueError(f"data.pseudo_real.share must be in (0, 1), got {share}")
    path = Path(spec["path"])
    if not path.is_file():
        logger.info("building the pseudo-labelled real frames %s", path)
        build(path, person=bool(spec.get("person", False)))
    real = PseudoRealDataset(path)
    times = max(1, round(share / (1.0 - share) * synthetic / len(real)))
    logger.info("%d pseudo-labelled real samples x %d (%.0f %% of an epoch)", len(real), times,
                100.0 * times * len(real) / (times * len(real) + synthetic))  # fmt: skip
    return Repeated(real, times)


def _holdout(video_id: str, fraction: float) -> bool:
    digest = hashlib.sha256(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


class Subset(Sequence):
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
    return [Subset(base, train_idx)], [Subset(base, val_idx)]


def build_data(recipe: Recipe, *, data_root: str | Path | None = None) -> tuple[list, list]:
    """Training and validation sample sequences of a recipe (never the test set).

    Returns:
        ``(train_parts, val_parts)``: lists of indexable :class:`Sample` sequences.
    """
    if recipe.data["kind"] == "synthetic":
        train = _synthetic(recipe.data, "train")
        if "pseudo_real" in recipe.data:
            train.append(_pseudo_real(recipe.data["pseudo_real"], sum(len(p) for p in train)))
        return train, _synthetic(recipe.data, "val")
    return _real(recipe.data, data_root)


def expressions(parts: Sequence[Sequence[Sample]]) -> list[str]:
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


def make_tokenizer(recipe: Recipe, config: HINetConfig, parts: Sequence) -> PhraseTokenizer:
    """The run's tokenizer.

    MiniLM's pinned WordPiece for the ``minilm`` text encoder; for ``transformer``, a
    SentencePiece model trained on the training expressions.
    """
    if config.text.encoder == "minilm":
        from models.pretrained import minilm_files

        return WordPieceTokenizer.load(minilm_files()["tokenizer"])
    corpus = expressions(parts)
    tokenizer = Tokenizer.train(
        corpus,
        vocab_size=recipe.vocab_size or config.text.vocab_size,
        model_type=recipe.tokenizer_type,
    )
    logger.info("tokenizer: %d pieces from %d expressions", tokenizer.vocab_size, len(corpus))
    return tokenizer


def _encodable(expression: str, tokenizer: PhraseTokenizer, config: HINetConfig) -> bool:
    try:
        tokenizer.encode(
            tokenizer.normalize(expression),
            max_tokens=config.text.max_tokens,
            max_chars=config.text.max_chars,
        )
    except ValueError:
        return False
    return True


def drop_unencodable(parts: list, tokenizer: PhraseTokenizer, config: HINetConfig) -> list:
    """Drop real-data samples whose expression is too long for the model (logged).

    Synthetic expressions must all fit (a failure is a recipe bug and raises ``ValueError``).
    """
    out = []
    for part in parts:
        if not isinstance(part, Subset):
            bad = [e for e in set(expressions([part])) if not _encodable(e, tokenizer, config)]
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
        out.append(Subset(part.base, keep))
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


class Schedule:
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
        """The multiplier at optimiser step ``step``."""
        return lr_factor(step, **self.kw)
