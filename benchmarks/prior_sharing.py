"""Can the default's grounding prior share work with its backbone? Measured, not assumed.

Both are EfficientNet-Lite0 on the same normalised image: the backbone fine-tuned with HINet, the
prior's copy frozen at its ImageNet weights (its head turns the stride-32 features into class
probabilities). If their first stages still computed the same features, the prior could start
from the backbone's instead of running its own. For each pyramid end (the stem, C1..C4) this
prints:

* the cosine between the two networks' features there (per location, over channels);
* what sharing would do to the prior: the backbone's features fed into the prior's remaining
  blocks and head, against the prior's own class probabilities: the share of stride-32 cells
  whose most probable ImageNet class stays, and the L1 distance of the distributions (0..2);
* what sharing would save: the share of the prior network's FLOPs up to there (convolutions and
  matrix products, :class:`torch.utils.flop_counter.FlopCounterMode`).

Frames: the opencv-doc clips that may calibrate (``Megamind.avi``, ``tree.avi``; no benchmark
scores them), every 25th of the first 200, at the default's 256x448::

    python -m benchmarks.prior_sharing --json benchmarks/results/prior_sharing.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import write_json
from models.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from models.files import OPENCV_DOC_DATA
from models.grounding import class_probabilities

CLIPS = ("Megamind.avi", "tree.avi")


def read_frames(size: tuple[int, int], step: int = 25, count: int = 200) -> list[np.ndarray]:
    """Every ``step``-th of the first ``count`` frames of :data:`CLIPS`, resized to ``size``."""
    frames = []
    for name in CLIPS:
        cap = cv2.VideoCapture(str(OPENCV_DOC_DATA / name))
        for index in range(count):
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA))
        cap.release()
    if not frames:
        raise FileNotFoundError(f"none of {', '.join(CLIPS)} in {OPENCV_DOC_DATA} (opencv-doc)")
    return frames


def _upto(net: torch.nn.Module, x: torch.Tensor, last: int) -> torch.Tensor:
    """Features after block ``last`` (-1: after the stem)."""
    x = F.relu6(net._bn0(net._conv_stem(x)))
    for i, block in enumerate(net._blocks):
        if i > last:
            break
        x = block(x)
    return x


def _head_from(net: torch.nn.Module, x: torch.Tensor, last: int) -> torch.Tensor:
    """The prior's class probabilities from features after block ``last``."""
    for i, block in enumerate(net._blocks):
        if i > last:
            x = block(x)
    x = F.relu6(net._bn1(net._conv_head(x)))
    logits = torch.einsum("bchw,kc->bkhw", x, net._fc.weight) + net._fc.bias[None, :, None, None]
    return torch.softmax(logits, dim=1)


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measure(checkpoint: Path, size: tuple[int, int] = (256, 448)) -> dict[str, Any]:
    """The table's rows for ``checkpoint`` (a model with the grounding prior)."""
    model, _, _ = load_checkpoint(checkpoint)
    if not model.config.prior:
        raise ValueError(f"{checkpoint} has no grounding prior")
    backbone, prior = model.backbone, model.prior.net
    mean = torch.tensor(model.config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.image_std).view(1, 3, 1, 1)
    frames = read_frames(size)
    rgb = np.stack([f[:, :, ::-1] for f in frames]).astype(np.float32) / 255.0
    x = (torch.from_numpy(rgb).permute(0, 3, 1, 2) - mean) / std
    ends = {"stem": -1, **{f"C{i + 1}": e for i, e in enumerate(backbone.level_ends[:4])}}
    rows = []
    with torch.inference_mode():
        own = class_probabilities(prior, x)
        total = _flops(lambda: class_probabilities(prior, x[:1]))
        for name, last in ends.items():
            a, b = _upto(backbone, x, last), _upto(prior, x, last)
            shared = _head_from(prior, a, last)
            rows.append({
                "shared_up_to": name,
                "stride": x.shape[-1] // a.shape[-1],
                "feature_cosine": round(F.cosine_similarity(a, b, dim=1).mean().item(), 4),
                "top1_kept": round((shared.argmax(1) == own.argmax(1)).float().mean().item(), 4),
                "l1": round((shared - own).abs().sum(1).mean().item(), 4),
                "prior_flops_saved": round(_flops(lambda k=last: _upto(prior, x[:1], k)) / total, 4),
            })  # fmt: skip
    return {
        "benchmark": "prior_sharing",
        "checkpoint": str(checkpoint),
        "size": list(size),
        "frames": len(frames),
        "clips": list(CLIPS),
        "prior_gflops": round(total / 1e9, 3),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.prior_sharing",
                                description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    report = measure(args.checkpoint)
    print(f"{report['checkpoint']}, {report['frames']} frames, the prior "
          f"{report['prior_gflops']} GFLOPs")  # fmt: skip
    print(
        f"{'shared up to':<13}{'stride':>7}{'cosine':>8}{'top-1 kept':>11}{'L1':>7}{'FLOPs saved':>12}"
    )
    for r in report["rows"]:
        print(f"{r['shared_up_to']:<13}{r['stride']:>7}{r['feature_cosine']:>8.3f}"
              f"{r['top1_kept']:>11.1%}{r['l1']:>7.3f}{r['prior_flops_saved']:>12.1%}")  # fmt: skip
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
