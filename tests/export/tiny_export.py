"""One real ``hinet_tiny`` checkpoint and its export per test process (export is slow on 2 cores).

Used by ``tests/export`` and ``tests/engine/test_backends*.py``; the first caller builds both
under its ``tmp_path_factory``, later callers get the same folders.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "the red car turning left",
    "the person riding a bike",
    "the small blue circle",
    "a car moving right",
    "the green ring that is not moving",
    "the big orange circle moving left",
]
#: Exported size range of the test export (tiny, to keep CPU time low).
MIN_SIDE, MAX_SIDE = 64, 256

_CACHE: dict[str, tuple[Path, Path]] = {}


def tiny_export(tmp_path_factory) -> tuple[Path, Path]:
    """``(checkpoint folder, export folder with fp32 + fp16 graphs)``, built once."""
    if "tiny" not in _CACHE:
        import torch

        from export.onnx_export import export_checkpoint
        from models.checkpoint import save_checkpoint
        from models.hinet import build_model
        from models.tokenizer import Tokenizer

        root = tmp_path_factory.mktemp("tiny_export")
        torch.manual_seed(0)
        model = build_model("hinet_tiny", pretrained_backbone=True).eval()
        tokenizer = Tokenizer.train(CORPUS, vocab_size=64)
        ckpt = save_checkpoint(root / "ckpt", model=model, tokenizer=tokenizer)
        out = root / "export"
        export_checkpoint(ckpt, out, fp16=True, min_side=MIN_SIDE, max_side=MAX_SIDE, max_batch=4)
        _CACHE["tiny"] = (ckpt, out)
    return _CACHE["tiny"]
