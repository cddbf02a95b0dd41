"""COCO run-length encoding of masks (numpy only).

COCO RLE: the mask is read in column-major order (down the first column, then the next) and
stored as the lengths of alternating runs, starting with a run of 0s (possibly empty). The
compact ``counts`` string stores each length as a signed integer in 6-bit characters
(``chr(48 + chunk)``): 5 value bits per character, least significant first, with bit 5 set
when more characters follow; from the third length on, the difference to the length two
places before is stored instead. ``{"size": [h, w], "counts": "..."}`` is what
``pycocotools.mask.encode`` writes and ``decode`` reads (the tests compare with it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["rle_decode", "rle_encode"]


def _runs(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # where a new run starts
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]])).tolist()
    return ([0] if flat[0] else []) + lengths  # the first run counts 0s


def _pack(counts: list[int]) -> str:
    out = []
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        while True:
            chunk = x & 0x1F
            x >>= 5  # arithmetic shift: negative values end at -1
            last = x == -1 if chunk & 0x10 else x == 0
            out.append(chr(48 + (chunk if last else chunk | 0x20)))
            if last:
                break
    return "".join(out)


def _unpack(text: str) -> list[int]:
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        x, shift = 0, 0
        while True:
            chunk = ord(text[pos]) - 48
            pos += 1
            x |= (chunk & 0x1F) << shift
            shift += 5
            if not chunk & 0x20:
                if chunk & 0x10:
                    x -= 1 << shift  # sign-extend
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_encode(mask: np.ndarray) -> dict[str, object]:
    """(H, W) bool mask -> ``{"size": [H, W], "counts": str}`` (COCO compressed RLE)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _pack(_runs(mask))}


def rle_decode(rle: dict[str, object]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: (H, W) bool."""
    h, w = (int(v) for v in rle["size"])  # type: ignore[union-attr]
    counts = _unpack(str(rle["counts"]))
    if sum(counts) != h * w:
        raise ValueError(f"RLE counts cover {sum(counts)} pixels, the size needs {h * w}")
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()
