"""The INT8 sensitivity sweep: each quantisable layer quantised alone, mask IoU vs FP32.

``python -m export --out DIR --int8 --int8-sensitivity sens.json`` measures it (and
``--int8-keep-below IOU`` keeps the layers under ``IOU`` float, :func:`export.int8.sensitive_nodes`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from export.calibration import (
    calibration_feeds,
    default_calibration_videos,
    default_pairs,
    real_pairs,
    synthetic_pairs,
)
from export.int8 import QUANT_OPS, SWEEP_FORMAT, _session, compare, quantize
from models.files import OPENCV_DOC_DATA

__all__ = ["sensitivity"]


def sensitivity(folder: str | Path, *, size: tuple[int, int] = (160, 160), limit: int = 0,
                progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Quantise one layer at a time and measure the mask IoU vs FP32 per layer.

    The frames that choose layers are kept apart from the parity report's (the demo clips and
    bikes.mp4), so a choice made from the sweep (``keep_below``) is judged on other frames:
    each row's ``synthetic`` comparison runs on shipped calibration pairs the sweep does not
    calibrate with, its ``real`` one on opencv-doc frames other than the calibration frames.

    Returns:
        ``{"format", "frame_net_sha256", "size", "rows"}``, one row per quantisable layer.

    Raises:
        ValueError: no opencv-doc clip is installed (the real frames of the sweep).
    """
    import onnx
    from tqdm import tqdm

    from engine.manifest import graph_file
    from export.engines import create_engine

    videos = default_calibration_videos()
    if not videos:
        raise ValueError(f"the sensitivity sweep needs opencv-doc's clips in {OPENCV_DOC_DATA} "
                         "(apt install opencv-doc)")  # fmt: skip
    folder = Path(folder)
    engine = create_engine("onnx", folder, input_size=size)
    calib = calibration_feeds(engine, default_pairs(videos, synthetic=6, per_video=2))
    held_out = calibration_feeds(engine, synthetic_pairs()[12:20])  # clips 7-10: not calibrated on
    real = calibration_feeds(engine, real_pairs(videos, 3))  # other positions than calibration's
    src = folder / graph_file("frame_net", "fp32")
    model = onnx.load(str(src))
    nodes = [n for n in model.graph.node if n.op_type in QUANT_OPS][: limit or None]
    ref = _session(src)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hinet-int8-sens-") as tmp:
        one = Path(tmp) / "one.onnx"
        for k, node in enumerate(tqdm(nodes, desc="int8 sensitivity", disable=not progress)):
            quantize(src, one, calib, only=[node.name])
            got = _session(one)
            rows.append({"index": k, "node": node.name, "op": node.op_type,
                         "synthetic": compare(ref, got, held_out),
                         "real": compare(ref, got, real)})  # fmt: skip
    engine.close()
    from models.files import sha256_file

    return {"format": SWEEP_FORMAT, "frame_net_sha256": sha256_file(src), "size": list(size),
            "rows": rows}  # fmt: skip
