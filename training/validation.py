"""Validation during training: the stream's post-processing on a batch of the model's logits."""

from __future__ import annotations

from typing import Any

import torch

from engine.preprocess import postprocess
from models.hinet import HINet
from training.metrics import ReferringAccumulator
from training.torch_data import ReferringTorchDataset, trim_tokens

__all__ = ["VAL_OVERALL", "validate"]

VAL_OVERALL = "overall"


@torch.no_grad()
def validate(
    model: HINet,
    dataset: ReferringTorchDataset,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Score ``model`` on every sample of ``dataset`` (built without augmentation).

    Each sample's logits become its mask with :func:`engine.preprocess.postprocess`, the
    post-processing of the stream and of :func:`training.evaluate.evaluate`, and are scored with
    :class:`training.metrics.ReferringAccumulator`.

    Returns:
        Split name (``sample.split`` or ``sample.dataset``) -> metric summary, plus ``"overall"``.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    accs: dict[str, ReferringAccumulator] = {}
    overall = ReferringAccumulator()
    n = len(dataset)
    for start in tqdm(range(0, n, batch_size), desc="validate", disable=not progress, leave=False):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        batch = trim_tokens({k: torch.stack([it[k] for it in items]) for k in items[0]})
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(batch["image"], batch["flow"], batch["token_ids"], batch["token_mask"])
        logits = logits.float().cpu().numpy()  # (B, 1, H, W)
        for j, it in enumerate(items):
            sample = dataset.samples[int(it["index"])]
            _, _, pred = postprocess(logits[j], sample.mask.shape)
            split = sample.split or sample.dataset
            key = (sample.video_id, sample.object_id, sample.frame_index)
            accs.setdefault(split, ReferringAccumulator()).add(pred, sample.mask, key=key)
            overall.add(pred, sample.mask, key=key)
    model.train(was_training)
    out = {name: acc.summary() for name, acc in accs.items()}
    out[VAL_OVERALL] = overall.summary()
    return out
