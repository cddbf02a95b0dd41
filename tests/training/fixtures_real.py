"""Builders of tiny dataset trees in the exact published formats of the real datasets.

Each builder writes a miniature A2D-Sentences / J-HMDB-Sentences / Ref-DAVIS17 /
Ref-YouTube-VOS tree under a folder and returns what a correct loader must yield from it.

Pixels encode what they are, so tests can check the loaders against the pixels:

- the background of frame ``t`` (0-based, in its video) is the grey level :func:`bg_level`,
  so a frame read from the wrong position (e.g. a 1-based number used as 0-based) is caught;
- every object is a square of a known colour that moves with ``t``; its mask is that square.

Frames are non-square (H != W), so a mask that is not transposed back from MATLAB order has
the wrong shape or the wrong content.
"""

from __future__ import annotations

import csv
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np
import scipy.io
from PIL import Image

#: Object/instance colours, BGR.
COLOURS = {0: (0, 0, 255), 1: (0, 255, 0), 2: (255, 0, 0), 3: (0, 255, 255)}


def bg_level(t: int) -> int:
    """Background grey level of frame ``t`` (0-based); frames differ by 25 levels."""
    return 20 + 25 * t


def square(obj: int, t: int, *, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of object ``obj`` at frame ``t`` in an (H, W) frame.

    Odd objects run right-to-left in the lower half, even ones left-to-right in the upper half
    (objects 0 and 2 coincide: never draw both).
    """
    h, w = size
    side = max(6, h // 4)
    y0 = 2 + (obj % 2) * (h // 2)
    x0 = (3 + 3 * t) % (w - side) if obj % 2 == 0 else (w - side - 1 - 3 * t) % (w - side)
    return y0, y0 + side, x0, x0 + side


def object_square_mask(obj: int, t: int, *, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 1 on object ``obj``'s square at frame ``t``, 0 elsewhere."""
    y0, y1, x0, x1 = square(obj, t, size=size)
    mask = np.zeros(size, np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def render(t: int, objects: list[int], *, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 BGR frame ``t``: grey background, coloured squares of ``objects``."""
    frame = np.full((*size, 3), bg_level(t), np.uint8)
    for obj in objects:
        y0, y1, x0, x1 = square(obj, t, size=size)
        frame[y0:y1, x0:x1] = COLOURS[obj]
    return frame


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    """Write BGR frames as an MPEG-4 Part 2 ('mp4v') file with ``cv2.VideoWriter``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()


def write_indexed_png(path: Path, labels: np.ndarray) -> None:
    """Write (H, W) uint8 labels as a palette ('P' mode) PNG with a DAVIS-like palette."""
    path.parent.mkdir(parents=True, exist_ok=True)
    palette = np.zeros((256, 3), np.uint8)
    palette[1:5] = [(128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]
    palette[255] = (224, 224, 192)
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    image.putpalette(palette.ravel().tolist())
    image.save(path)


def write_mat_v73(path: Path, name: str, array: np.ndarray) -> None:
    """Write ``array`` like MATLAB ``save -v7.3``: HDF5 with a 512-byte MATLAB header.

    MATLAB stores column-major, so the HDF5 dataset holds the axes reversed (``array.T``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset(name, data=np.ascontiguousarray(array.T))
        f[name].attrs["MATLAB_class"] = np.bytes_(b"uint8")
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + struct.pack("<H", 0x0200) + b"IM"
    with path.open("r+b") as fh:
        fh.write(header)


@dataclass(frozen=True)
class Expected:
    """What one sample must contain."""

    video_id: str
    frame_index: int
    object_id: str
    expression: str
    mask: np.ndarray  # (H, W) uint8 1/0/255
    colour: tuple[int, int, int]  # BGR of the referred object


@dataclass
class Tree:
    """A built fixture tree and the samples a loader must yield, per split."""

    root: Path
    expected: dict[str, list[Expected]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# A2D-Sentences

A2D_SIZE = (48, 64)  # (H, W)
A2D_FRAMES = 8
# video -> (subset, instances drawn, {1-based frame number: instance ids listed in the .h5})
A2D_VIDEOS = {
    "vidA": (0, [0, 1], {3: [0, 1], 6: [1]}),  # frame 6: N == 1, reMask stored 2-D
    "vidC": (0, [0], {1: [0], 5: [0, 0]}),  # frame 1 has no previous; frame 5 duplicated id
    "vidMiss": (0, [0], {2: [0]}),  # listed in a2d_missed_videos.txt
    "vidB": (1, [0, 1], {4: [1, 0]}),  # test; ids listed out of order
}
A2D_ROWS = [  # a2d_annotation.txt rows after the header
    ("vidA", "0", "  The RED   square\tmoving right "),
    ("vidA", "1", "the green square moving left"),
    ("vidA", "1 (copy)", "the green square moving left"),
    ("vidC", "0", "a red square, alone"),
    ("vidMiss", "0", "the red square of a missed video"),
    ("vidB", "1", "Green square in the test video"),
    ("vidB", "0", "red square in the test video"),
    ("vidZ", "0", "a video that is not in videoset"),
]


def make_a2d(root: Path) -> Tree:
    """Write an A2D-Sentences tree under ``root`` (see :data:`A2D_VIDEOS`, :data:`A2D_ROWS`)."""
    release, text = root / "Release", root / "text_annotations"
    (release / "clips320H").mkdir(parents=True)
    inst_root = text / "a2d_annotation_with_instances"
    inst_root.mkdir(parents=True)
    h, w = A2D_SIZE
    with (release / "videoset.csv").open("w", newline="") as f:
        for vid, (subset, _, annotated) in A2D_VIDEOS.items():
            f.write(
                f"{vid},11,0,{A2D_FRAMES / 10},{h},{w},{A2D_FRAMES},{len(annotated)},{subset}\n"
            )
    (text / "a2d_missed_videos.txt").write_text("vidMiss\n")
    with (text / "a2d_annotation.txt").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["video_id", "instance_id", "query"])
        writer.writerows(A2D_ROWS)

    dup_other = np.zeros(A2D_SIZE, np.uint8)
    dup_other[-5:, :7] = 1  # the second mask of the duplicated id: NOT the square
    for vid, (_, drawn, annotated) in A2D_VIDEOS.items():
        write_mp4(
            release / "clips320H" / f"{vid}.mp4",
            [render(t, drawn, size=A2D_SIZE) for t in range(A2D_FRAMES)],
        )
        for number, ids in annotated.items():
            t = number - 1
            masks = [object_square_mask(i, t, size=A2D_SIZE) for i in ids]
            if len(ids) == 2 and ids[0] == ids[1]:
                masks[1] = dup_other
            path = inst_root / vid / f"{number:05d}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as f:
                f["instance"] = np.asarray(ids, np.float64)  # (N,)
                if len(ids) == 1:
                    f["reMask"] = masks[0].T.astype(np.uint8)  # (W, H)
                else:
                    f["reMask"] = np.stack([m.T for m in masks]).astype(np.float64)  # (N, W, H)
                boxes = []
                for m in masks:
                    ys, xs = np.nonzero(m)
                    boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
                f["reBBox"] = np.asarray(boxes, np.float64).T  # (4, N)
                f["id"] = np.full((1, len(ids)), 11.0)  # (1, N) actor-action code

    def exp(vid: str, number: int, inst: int, query: str) -> Expected:
        t = number - 1
        return Expected(
            vid, t, str(inst), query, object_square_mask(inst, t, size=A2D_SIZE), COLOURS[inst]
        )

    expected = {
        "train": [
            exp("vidA", 3, 0, "the red square moving right"),
            exp("vidA", 3, 1, "the green square moving left"),
            exp("vidA", 6, 1, "the green square moving left"),
            exp("vidC", 1, 0, "a red square, alone"),
            exp("vidC", 5, 0, "a red square, alone"),
        ],
        "test": [
            exp("vidB", 4, 1, "green square in the test video"),
            exp("vidB", 4, 0, "red square in the test video"),
        ],
    }
    return Tree(root=root, expected=expected)


# --------------------------------------------------------------------------------------------
# J-HMDB-Sentences

JHMDB_SIZE = (24, 32)  # (H, W)
# video -> (action, number of PNG frames, number of mask frames T, mat format)
JHMDB_VIDEOS = {
    "April_09_brush_hair_u_nm_np1_ba_goo_0": ("brush_hair", 8, 7, "v5"),  # one PNG beyond T
    "Ball_hit_catch_f_cm_np1_fr_med_0": ("catch", 6, 6, "v7.3"),
    "short_clap_0": ("clap", 2, 2, "v5"),  # fewer frames than the protocol's 3
}
JHMDB_QUERIES = {
    "April_09_brush_hair_u_nm_np1_ba_goo_0": "A  woman BRUSHING her hair",
    "Ball_hit_catch_f_cm_np1_fr_med_0": "man catching a ball",
    "short_clap_0": "person clapping",
}
JHMDB_ACTOR = 2  # the actor is drawn as object 2 (blue)


def make_jhmdb(root: Path) -> Tree:
    """Write a J-HMDB-Sentences tree under ``root`` (see :data:`JHMDB_VIDEOS`)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "jhmdb_annotation.txt").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["video_id", "query"])
        writer.writerows(JHMDB_QUERIES.items())
    for vid, (action, n_png, n_mask, fmt) in JHMDB_VIDEOS.items():
        folder = root / "Rename_Images" / action / vid
        folder.mkdir(parents=True)
        for t in range(n_png):
            cv2.imwrite(str(folder / f"{t + 1:05d}.png"), render(t, [JHMDB_ACTOR], size=JHMDB_SIZE))
        part = np.stack(
            [object_square_mask(JHMDB_ACTOR, t, size=JHMDB_SIZE) for t in range(n_mask)], axis=2
        )  # (H, W, T)
        mat = root / "puppet_mask" / action / vid / "puppet_mask.mat"
        mat.parent.mkdir(parents=True)
        if fmt == "v7.3":
            write_mat_v73(mat, "part_mask", part)
        else:
            scipy.io.savemat(mat, {"part_mask": part}, do_compression=True)
    return Tree(
        root=root,
        extra={
            "available": {vid: min(v[1], v[2]) for vid, v in JHMDB_VIDEOS.items()},
            "queries": {vid: " ".join(q.lower().split()) for vid, q in JHMDB_QUERIES.items()},
            "actions": {vid: v[0] for vid, v in JHMDB_VIDEOS.items()},
        },
    )


# --------------------------------------------------------------------------------------------
# Ref-DAVIS17

DAVIS_SIZE = (24, 40)  # (H, W)
# sequence -> (split, number of frames, object ids)
DAVIS_SEQUENCES = {
    "classic-car": ("train", 3, [1, 2]),
    "dogs-scale": ("train", 2, [1]),
    "motorbike": ("val", 3, [1, 2]),
    "bear": ("val", 4, [1]),
}
# (file, encoding, lines); sequence names as in the published files, typos included
DAVIS_FILES = {
    "Davis17_annot1.txt": (
        "utf-8",
        [
            ("clasic-car", 1, "a red car"),
            ("classic-car", 2, "the na\u00efve green car"),
            ("dog-scale", 1, "a dog on a scale"),
            ("motor-bike", 1, "The  RED motorbike"),
            ("motor-bike", 2, "a green rider"),
            ("bear", 1, "a brown bear"),
        ],
    ),
    "Davis17_annot2.txt": (
        "latin-1",
        [
            ("classic-car", 1, "car parked by a caf\u00e9"),
            ("dogs-scale", 1, "small dog"),
            ("motorbike", 2, "rider in green"),
            ("bear", 1, "bear walking"),
        ],
    ),
    "Davis17_annot1_full_video.txt": (
        "latin-1",  # annotator 1 falls back to latin-1
        [
            ("clasic-car", 1, "red car driving through the fa\u00e7ade"),
            ("motorbike", 1, "motorbike jumping"),
            ("bear", 1, "bear walking over rocks"),
        ],
    ),
    "Davis17_annot2_full_video.txt": (
        "latin-1",
        [
            ("motor-bike", 2, "rider holding on"),
            ("bear", 1, "big bear on the rocks"),
        ],
    ),
}


def davis_labels(t: int, objects: list[int]) -> np.ndarray:
    """(H, W) uint8 labels of frame ``t``: object ids on squares, a void (255) ring around 1."""
    labels = np.zeros(DAVIS_SIZE, np.uint8)
    for obj in objects:
        y0, y1, x0, x1 = square(obj, t, size=DAVIS_SIZE)
        if obj == 1:
            labels[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = 255
        labels[y0:y1, x0:x1] = obj
    return labels


def make_davis(root: Path) -> Tree:
    """Write a Ref-DAVIS17 tree under ``root`` (see :data:`DAVIS_SEQUENCES`, :data:`DAVIS_FILES`)."""
    davis = root / "DAVIS"
    sets = davis / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    for split in ("train", "val"):
        names = [s for s, v in DAVIS_SEQUENCES.items() if v[0] == split]
        (sets / f"{split}.txt").write_text("\n".join(names) + "\n")
    for seq, (_, n, objects) in DAVIS_SEQUENCES.items():
        images = davis / "JPEGImages" / "480p" / seq
        images.mkdir(parents=True)
        for t in range(n):
            frame = render(t, objects, size=DAVIS_SIZE)
            cv2.imwrite(str(images / f"{t:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            write_indexed_png(
                davis / "Annotations" / "480p" / seq / f"{t:05d}.png", davis_labels(t, objects)
            )
    (davis / "Annotations_unsupervised" / "480p").mkdir(parents=True)
    text = root / "davis_text_annotations"
    text.mkdir()
    for name, (encoding, lines) in DAVIS_FILES.items():
        body = "".join(f'{seq} {obj} "{exp}"\n' for seq, obj, exp in lines) + "\n"
        (text / name).write_bytes(body.encode(encoding))
    return Tree(root=root)


def davis_expected(*, split: str, annotators: tuple[int, ...], full_video: bool) -> list[Expected]:
    """Samples a Ref-DAVIS17 loader must yield for these options (set semantics)."""
    typos = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
    out = []
    for n in annotators:
        name = f"Davis17_annot{n}{'_full_video' if full_video else ''}.txt"
        for seq, obj, exp in DAVIS_FILES[name][1]:
            seq = typos.get(seq, seq)
            seq_split, frames, objects = DAVIS_SEQUENCES[seq]
            if seq_split != split:
                continue
            for t in range(frames):
                labels = davis_labels(t, objects)
                mask = (labels == obj).astype(np.uint8)
                mask[labels == 255] = 255
                out.append(
                    Expected(seq, t, str(obj), " ".join(exp.lower().split()), mask, COLOURS[obj])
                )
    return out


# --------------------------------------------------------------------------------------------
# Ref-YouTube-VOS

YTVOS_SIZE = (24, 40)  # (H, W)
# video -> (frame names, {obj_id: frames (positions) where present}, expressions (exp, obj_id))
YTVOS_VIDEOS = {
    "003234408d": (
        ["00000", "00005", "00010"],
        {1: [0, 1, 2], 2: [0, 2]},
        [("a RED fish", "1"), ("the green  fish", "2")],
    ),
    "0043f083b5": (
        ["00000", "00005"],
        {1: [0, 1]},
        [("a red car", "1"), ("Red car on the road", "1")],
    ),
}


def ytvos_labels(position: int, objects: dict[int, list[int]]) -> np.ndarray:
    """(H, W) uint8 labels of the frame at ``position``: object ids on their squares."""
    labels = np.zeros(YTVOS_SIZE, np.uint8)
    for obj, present in objects.items():
        if position in present:
            labels[object_square_mask(obj, position, size=YTVOS_SIZE) == 1] = obj
    return labels


def make_ytvos(root: Path) -> Tree:
    """Write a Ref-YouTube-VOS tree under ``root``: a ``train`` split and a mask-less ``valid``."""
    meta: dict = {"videos": {}}
    for vid, (frames, objects, expressions) in YTVOS_VIDEOS.items():
        for p, name in enumerate(frames):
            drawn = [o for o, present in objects.items() if p in present]
            jpg = root / "train" / "JPEGImages" / vid / f"{name}.jpg"
            jpg.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(jpg), render(p, drawn, size=YTVOS_SIZE), [cv2.IMWRITE_JPEG_QUALITY, 95])
            write_indexed_png(
                root / "train" / "Annotations" / vid / f"{name}.png", ytvos_labels(p, objects)
            )
        meta["videos"][vid] = {
            "expressions": {
                str(i): {"exp": e, "obj_id": o} for i, (e, o) in enumerate(expressions)
            },
            "frames": frames,
        }
    for split, data in (("train", meta), ("valid", {"videos": {}})):
        path = root / "meta_expressions" / split / "meta_expressions.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(data))
    (root / "valid" / "JPEGImages").mkdir(parents=True)

    expected = []
    for vid, (frames, objects, expressions) in YTVOS_VIDEOS.items():
        for exp, obj in expressions:
            for p in range(len(frames)):
                mask = (ytvos_labels(p, objects) == int(obj)).astype(np.uint8)
                expected.append(
                    Expected(vid, p, obj, " ".join(exp.lower().split()), mask, COLOURS[int(obj)])
                )
    return Tree(root=root, expected={"train": expected})


# --------------------------------------------------------------------------------------------
# Checks shared by the loader tests


def assert_sample(sample, expected: Expected, *, dataset: str, split: str) -> None:
    """Check every field of a yielded ``Sample`` against ``expected`` and against its pixels.

    Pixels: the frame's background must be the grey level of ``frame_index`` (and the previous
    frame's that of ``frame_index - 1``), and the frame under the mask must have the object's
    colour, so a mask that is misaligned with its frame fails even if it equals ``expected``.
    """
    assert sample.dataset == dataset
    assert sample.split == split
    assert sample.video_id == expected.video_id
    assert sample.frame_index == expected.frame_index
    assert sample.object_id == expected.object_id
    assert sample.expression == expected.expression
    assert sample.flow is None
    assert sample.frame.dtype == np.uint8 and sample.frame.ndim == 3
    assert sample.frame.shape == (*expected.mask.shape, 3)
    assert sample.mask.dtype == np.uint8
    np.testing.assert_array_equal(sample.mask, expected.mask)
    assert abs(float(np.median(sample.frame)) - bg_level(expected.frame_index)) <= 6
    if expected.frame_index == 0:
        assert sample.prev_frame is None
    else:
        assert sample.prev_frame is not None
        assert sample.prev_frame.shape == sample.frame.shape
        assert sample.prev_frame.dtype == np.uint8
        assert abs(float(np.median(sample.prev_frame)) - bg_level(expected.frame_index - 1)) <= 6
    inside = cv2.erode((expected.mask == 1).astype(np.uint8), np.ones((3, 3), np.uint8)) == 1
    if inside.any():
        mean = sample.frame[inside].astype(np.float64).mean(axis=0)  # (3,) BGR
        assert np.abs(mean - np.asarray(expected.colour)).max() < 40, (mean, expected.colour)
