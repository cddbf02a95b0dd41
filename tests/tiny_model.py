"""The one tiny ``hinet_tiny`` checkpoint and ONNX export shared by every test folder.

Built once per pytest session by the fixtures in ``tests/conftest.py`` (exporting takes about a
minute on 2 cores); test modules import the constants from here.
"""

from __future__ import annotations

from pathlib import Path

#: Every phrase the tests type: the tokenizer is trained on all of them, so each encodes within
#: the model's ``max_tokens``.
CORPUS = [
    "the red circle",
    "the small blue square",
    "the green ring that is not moving",
    "a big yellow star moving right",
    "the square moving left",
    "the purple triangle",
    "the cross that moves down",
    "the big orange circle moving up",
    "the red car turning left",
    "the person riding a bike",
    "the small blue circle",
    "a car moving right",
    "the big orange circle moving left",
]
VOCAB_SIZE = 64
#: Exported size range of the test export (tiny, to keep CPU time low).
MIN_SIDE, MAX_SIDE = 64, 256
MAX_BATCH = 4


def build_tiny_checkpoint(folder: Path) -> Path:
    """Save a real ``hinet_tiny`` (ImageNet backbone weights, random heads, seed 0) to ``folder``."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.hinet import build_model
    from models.tokenizer import Tokenizer

    torch.manual_seed(0)
    model = build_model("hinet_tiny", pretrained_backbone=True).eval()
    tokenizer = Tokenizer.train(CORPUS, vocab_size=VOCAB_SIZE)
    return save_checkpoint(folder, model=model, tokenizer=tokenizer)


def build_tiny_minilm_checkpoint(folder: Path) -> Path:
    """Save a real ``hinet_tiny_minilm``: the pinned pretrained MiniLM (not stored in the
    checkpoint), ImageNet backbone, random adapter and heads (seed 0), MiniLM's tokenizer."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.hinet import build_model
    from models.pretrained import minilm_files
    from models.tokenizer import WordPieceTokenizer

    torch.manual_seed(0)
    model = build_model("hinet_tiny_minilm", pretrained_backbone=True).eval()
    tokenizer = WordPieceTokenizer.load(minilm_files()["tokenizer"])
    return save_checkpoint(folder, model=model, tokenizer=tokenizer)


def build_tiny_prior_checkpoint(folder: Path) -> Path:
    """Save a real ``hinet_tiny_prior``: as :func:`build_tiny_minilm_checkpoint` plus the
    grounding prior (frozen ImageNet EfficientNet-Lite0 with its head, not stored; the class-name
    vectors, stored). Its prior injections are drawn at random (seed 1) instead of zero, so the
    prior visibly changes the logits."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.hinet import build_model
    from models.pretrained import minilm_files
    from models.tokenizer import WordPieceTokenizer

    torch.manual_seed(0)
    model = build_model("hinet_tiny_prior", pretrained_backbone=True).eval()
    randomise_prior_paths(model, seed=1)
    tokenizer = WordPieceTokenizer.load(minilm_files()["tokenizer"])
    return save_checkpoint(folder, model=model, tokenizer=tokenizer)


def build_tiny_person_checkpoint(folder: Path) -> Path:
    """Save a real tiny model of the shipped default's kind: :func:`build_tiny_prior_checkpoint`
    plus the person class (MediaPipe's selfie segmenter, read from its package) and the prior
    added to the output logits (``prior_skip``)."""
    import dataclasses

    import torch

    from models.checkpoint import save_checkpoint
    from models.config import PRESETS
    from models.hinet import build_model
    from models.pretrained import minilm_files
    from models.tokenizer import WordPieceTokenizer

    torch.manual_seed(0)
    config = dataclasses.replace(PRESETS["hinet_tiny_prior"], prior_person=True, prior_skip=True)
    model = build_model(config).eval()
    randomise_prior_paths(model, seed=1)
    tokenizer = WordPieceTokenizer.load(minilm_files()["tokenizer"])
    return save_checkpoint(folder, model=model, tokenizer=tokenizer)


def build_tiny_referent_checkpoint(folder: Path) -> Path:
    """Save a real ``hinet_tiny_referent``: :func:`build_tiny_prior_checkpoint` plus the referent
    input, its injections drawn at random (seed 2) instead of zero so the map changes the logits."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.hinet import build_model
    from models.pretrained import minilm_files
    from models.tokenizer import WordPieceTokenizer

    torch.manual_seed(0)
    model = build_model("hinet_tiny_referent", pretrained_backbone=True).eval()
    randomise_prior_paths(model, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for block in model.referent_in.values():
            block.out.weight.copy_(torch.randn(block.out.weight.shape, generator=g) * 2.0)
    tokenizer = WordPieceTokenizer.load(minilm_files()["tokenizer"])
    return save_checkpoint(folder, model=model, tokenizer=tokenizer)


def randomise_prior_paths(model, *, seed: int, std: float = 0.5) -> None:
    """Give the zero-initialised prior injections and gate paths random weights, in place."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        convs = [m.scale for m in model.prior_in.values()] + [
            m.shift for m in model.prior_in.values()
        ]
        convs += [gate.prior for gate in model.gates.values()]
        for conv in convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)


def export_tiny(checkpoint: Path, folder: Path) -> Path:
    """Export ``checkpoint`` (fp32 + fp16 graphs, sides ``MIN_SIDE``..``MAX_SIDE``) to ``folder``."""
    from export.onnx_export import export_checkpoint

    export_checkpoint(
        checkpoint, folder, fp16=True, min_side=MIN_SIDE, max_side=MAX_SIDE, max_batch=MAX_BATCH
    )
    return folder
