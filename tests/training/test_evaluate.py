"""training.evaluate: report structure, metric plumbing and the CLI's argument checks."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import pytest

from engine.base import Engine
from models.checkpoint import BASELINE_CHECKPOINT
from models.config import build_config
from models.tokenizer import Tokenizer
from training.evaluate import OVERALL, build_parser, evaluate, main
from training.sample import Sample

CORPUS = [
    "the red circle",
    "the blue square moving left",
    "the green ring that is not moving",
    "a big yellow star moving right",
    "the small purple triangle",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """The scripted engine's tokenizer (real-model tests use ``tiny_checkpoint``)."""
    return Tokenizer.train(CORPUS, vocab_size=48)


class ScriptedEngine(Engine):
    """TEST DOUBLE for the metric plumbing only -- not a product component.

    ``run_frame`` ignores the image and returns +/-10 logits of the next mask from ``masks``
    (given at the network input size), so the expected scores are known exactly. It records
    the flow inputs it saw. ``run_text`` returns zero features of the right shapes.
    """

    backend = "scripted-test"

    def __init__(self, masks: list[np.ndarray], **kw) -> None:
        super().__init__(**kw)
        self._masks = list(masks)
        self.flows: list[np.ndarray] = []

    def run_text(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        b, n = inputs["token_ids"].shape
        c = self.config.text.width
        return {
            "words": np.zeros((b, n, c), np.float32),
            "words_mask": inputs["token_mask"].astype(np.float32),
            "sentence": np.zeros((b, c), np.float32),
        }

    def run_frame(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.flows.append(inputs["flow"].copy())
        m = self._masks.pop(0)
        return {"logits": np.where(m, 10.0, -10.0).astype(np.float32)[None, None]}


def _scripted(tokenizer, masks, size=(64, 64)) -> ScriptedEngine:
    return ScriptedEngine(
        masks, config=build_config("hinet_tiny"), tokenizer=tokenizer, input_size=size
    )


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(small, np.ones((8, 8, 1), np.uint8))[:h, :w])


def _sample(
    mask,
    *,
    split="appearance",
    dataset="synthetic",
    video="v0",
    frame_index=0,
    obj="1",
    expression="the red circle",
    prev=True,
    flow=None,
) -> Sample:
    h, w = mask.shape
    frame = _textured(h, w, seed=frame_index)
    prev_frame = np.roll(frame, 3, axis=1) if prev else None
    return Sample(
        frame=frame,
        prev_frame=prev_frame,
        flow=flow,
        expression=expression,
        mask=mask.astype(np.uint8),
        dataset=dataset,
        video_id=video,
        frame_index=frame_index,
        object_id=obj,
        split=split,
    )


def _square(h, w, top, left, side, value=1):
    m = np.zeros((h, w), np.uint8)
    m[top : top + side, left : left + side] = value
    return m


def test_perfect_predictor_scores_one(tokenizer):
    masks = [
        _square(64, 64, 10, 10, 20),
        _square(64, 64, 30, 5, 12),
        np.zeros((64, 64), np.uint8),  # empty target predicted empty: IoU 1
    ]
    samples = [
        _sample(masks[0], split="appearance"),
        _sample(masks[1], split="motion", expression="the blue square moving left"),
        _sample(masks[2], split="motion", frame_index=1, prev=False),
    ]
    # DAVIS-style object: 4 frames (semi-supervised keeps frames 1, 2), void pixels present.
    davis = []
    for t in range(4):
        m = _square(64, 64, 8 + t, 8 + 2 * t, 16)
        m[0:4, :] = 255
        davis.append(_sample(m, split="val", dataset="davis17", video="dv", frame_index=t))
    preds = [m == 1 for m in masks] + [s.mask == 1 for s in davis]
    engine = _scripted(tokenizer, preds)
    report = evaluate(engine, samples + davis, progress=False)

    assert list(report.referring) == ["appearance", "motion", "val", OVERALL]
    assert report.referring["appearance"]["samples"] == 1
    assert report.referring["motion"]["samples"] == 2
    assert report.referring[OVERALL]["samples"] == report.samples == 7
    for row in report.referring.values():
        assert row["oIoU"] == 1.0
        assert row["mIoU"] == pytest.approx(1.0)
        assert all(row[f"P@0.{k}"] == 1.0 for k in range(5, 10))
    assert list(report.davis) == ["val", OVERALL]
    d = report.davis[OVERALL]
    assert d["protocol"] == "semi-supervised" and d["objects"] == 1
    assert d["J&F"] == d["J"] == d["F"] == d["J-recall"] == 1.0 and d["J-decay"] == 0.0
    assert report.datasets == ("davis17", "synthetic")
    assert report.backend == "scripted-test" and report.input_size == (64, 64)
    assert report.latency_ms["mean"] >= 0.0 and report.text_rejected == 0

    table = report.table()
    for token in ("appearance", "motion", OVERALL, "oIoU", "P@0.9", "J&F", "semi-supervised"):
        assert token in table
    data = json.loads(report.to_json())
    assert data["referring"]["overall"]["oIoU"] == 1.0


def test_known_scores_and_resolution(tokenizer):
    # Frames 48x80 (3840 px), network 64x64. Predictions at network size: everything (resized:
    # still everything), nothing.
    t1 = _square(48, 80, 0, 0, 24)  # 576 px: pred all -> I = 576, U = 3840, IoU 0.15
    t2 = _square(48, 80, 10, 10, 20)  # 400 px: pred none -> I = 0, U = 400
    t2[0:2, :] = 255  # void does not change anything here (pred empty, void outside target)
    full, empty = np.ones((64, 64), bool), np.zeros((64, 64), bool)
    engine = _scripted(tokenizer, [full, empty])
    report = evaluate(
        engine, [_sample(t1, split="test"), _sample(t2, split="test")], progress=False
    )
    s = report.referring["test"]
    assert s["oIoU"] == pytest.approx(576 / (3840 + 400))
    assert s["mIoU"] == pytest.approx((576 / 3840) / 2, abs=1e-6)
    assert s["P@0.5"] == 0.0
    assert report.davis == {}
    assert report.referring[OVERALL] == s


def test_flow_sources(tokenizer):
    m = _square(64, 64, 10, 10, 20)
    pre = np.zeros((16, 16, 2), np.float32)
    pre[..., 0] = 4.0  # 4 px of a 16-px grid, gain 20 -> 5.0 normalised
    samples = [
        _sample(m, prev=False),  # first frame: zero flow
        _sample(m, prev=True, frame_index=1),  # computed from prev_frame (shifted texture)
        _sample(m, prev=True, frame_index=2, flow=pre),  # precomputed: not what users get
    ]
    engine = _scripted(tokenizer, [m == 1] * 3)
    evaluate(engine, samples, progress=False)
    f0, f1, f2 = engine.flows
    assert f0.shape == (1, 2, 64, 64) and not f0.any()
    # prev = frame rolled right by 3 px, so the scene moves left: mean dx clearly negative.
    assert f1[0, 0].mean() < -0.2
    # The stream computes its flow from the previous frame, so the evaluator does too.
    assert f2[0, 0].mean() < -0.2 and not np.allclose(f2[0, 0], 5.0)


def test_rejected_expression_scored_empty(tokenizer):
    long_text = "the red circle " * 20  # 300 chars > max_chars 200
    m = _square(64, 64, 10, 10, 20)
    engine = _scripted(tokenizer, [m == 1])
    samples = [_sample(m), _sample(m, expression=long_text, frame_index=1)]
    report = evaluate(engine, samples, progress=False)
    assert report.text_rejected == 1
    s = report.referring[OVERALL]
    assert s["oIoU"] == pytest.approx(400 / 800)  # one hit, one empty prediction of 400 px
    assert s["P@0.5"] == 0.5


def test_evaluate_errors(tokenizer):
    m = _square(64, 64, 10, 10, 20)
    engine = _scripted(tokenizer, [m == 1] * 4)
    with pytest.raises(ValueError, match="threshold"):
        evaluate(engine, [_sample(m)], threshold=1.0, progress=False)
    with pytest.raises(ValueError, match="semi-supervised, all"):
        evaluate(engine, [_sample(m)], protocol="unsupervised", progress=False)
    with pytest.raises(ValueError, match="Sample"):
        evaluate(engine, [{"frame": None}], progress=False)
    with pytest.raises(ValueError, match="no samples"):
        evaluate(engine, [], progress=False)


def test_sequential_mode_runs_whole_clips_with_keyframes(tokenizer):
    from engine.session import KeyframePolicy

    m = _square(64, 64, 16, 16, 24)
    samples = [_sample(m, frame_index=t, prev=t == 0) for t in range(6)]  # one run of 6 frames
    samples += [_sample(m, frame_index=t, obj="2") for t in (0, 1, 2)]  # another object: anew
    samples += [_sample(m, frame_index=t, obj="2") for t in (5, 6)]  # frames skipped: anew
    keyed = _scripted(tokenizer, [m] * len(samples))
    report = evaluate(keyed, samples, keyframes=KeyframePolicy.parse("2"), progress=False)
    # the network runs on frames 0, 2, 4 | 0, 2 | 5; the other frames are warped masks
    assert len(keyed.flows) == 6 and report.samples == 11
    assert report.meta["sequential"] and report.meta["keyframes"] == "2"
    assert report.meta["inferred_share"] == pytest.approx(6 / 11)
    every = _scripted(tokenizer, [m] * len(samples))
    report = evaluate(every, samples, sequential=True, progress=False)
    assert len(every.flows) == 11 and report.meta["inferred_share"] == 1.0
    assert report.referring[OVERALL]["mIoU"] == pytest.approx(1.0)  # the scripted masks, exact
    alone = evaluate(_scripted(tokenizer, [m] * len(samples)), samples, progress=False)
    assert not alone.meta["sequential"] and alone.meta["keyframes"] == "1"


def test_real_hinet_torch_engine(tiny_checkpoint):
    """A real tiny HINet (ImageNet backbone, untrained head) in the real torch engine."""
    from engine.backends.torch_backend import TorchEngine
    from models.checkpoint import load_checkpoint

    model, tokenizer, _ = load_checkpoint(tiny_checkpoint)
    engine = TorchEngine(model=model, tokenizer=tokenizer, input_size=(64, 64))
    samples = [
        _sample(
            _square(64, 96, 10, 10, 20), frame_index=t, split="test", dataset="davis17", video="dv"
        )
        for t in range(3)
    ]
    report = evaluate(engine, samples, protocol="all", progress=False)
    s = report.referring[OVERALL]
    assert s["samples"] == 3
    # The same numbers by hand from the masks the stream's session draws for these frames.
    from engine.session import Segmenter
    from training.metrics import boundary_f, jaccard

    seg = Segmenter(engine)
    seg.set_phrase(samples[0].expression)
    masks = []
    for sample in samples:
        seg.reset()
        seg.observe(sample.prev_frame)
        masks.append(seg.step(sample.frame).mask)
    inter = [int((m & (x.mask == 1)).sum()) for m, x in zip(masks, samples)]
    union = [int((m | (x.mask == 1)).sum()) for m, x in zip(masks, samples)]
    assert s["oIoU"] == pytest.approx(sum(inter) / sum(union))
    assert s["mIoU"] == pytest.approx(
        np.mean([(i + 1e-6) / (u + 1e-6) for i, u in zip(inter, union)])
    )
    d = report.davis[OVERALL]
    j = np.mean([jaccard(m, x.mask) for m, x in zip(masks, samples)])
    f = np.mean([boundary_f(m, x.mask) for m, x in zip(masks, samples)])
    assert d["objects"] == 1 and d["protocol"] == "all"
    assert d["J&F"] == pytest.approx((j + f) / 2)
    assert report.backend == "torch" and report.input_size == (64, 64)
    assert report.latency_ms["mean"] > 0.0 and not math.isnan(report.latency_ms["p95"])


def _run_cli(argv, capsys):
    assert main(argv) == 0
    return capsys.readouterr().out


def test_cli_checkpoint_torch_synthetic(tiny_checkpoint, tmp_path, capsys):
    out_json = tmp_path / "report.json"
    argv = ["--checkpoint", str(tiny_checkpoint), "--backend", "torch", "--dataset", "synthetic"]
    argv += ["--split", "motion", "--limit", "3", "--size", "64x64", "--json", str(out_json)]
    argv += ["--no-progress"]
    out = _run_cli(argv, capsys)
    assert "oIoU" in out and "motion" in out and "overall" in out and "torch" in out
    data = json.loads(out_json.read_text())
    assert data["samples"] == 3 and data["backend"] == "torch"
    assert data["input_size"] == [64, 64]
    assert list(data["referring"]) == ["motion", "overall"]
    assert data["meta"]["dataset"] == "synthetic" and data["meta"]["limit"] == 3
    assert data["davis"] == {}


# -- CLI -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset"], "expected one argument"),
        (["--checkpoint", "c", "--export", "e", "--dataset", "a2d"], "unrecognized arguments"),
        (["--checkpoint", "c", "--dataset", "coco"], "invalid choice"),
        (["--checkpoint", "c", "--dataset", "a2d", "--size", "100x100"], "multiple of 32"),
        (["--checkpoint", "c", "--dataset", "a2d", "--size", "big"], "HxW"),
        (["--checkpoint", "c", "--dataset", "a2d", "--limit", "0"], "positive integer"),
        (["--checkpoint", "c", "--dataset", "a2d", "--protocol", "x"], "invalid choice"),
        (["--checkpoint", "c", "--dataset", "a2d", "--keyframes", "0"], "a period >= 1"),
    ],
)
def test_cli_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "davis17"], "--root is required for --dataset davis17"),
        (
            ["--dataset", "synthetic", "--root", "x"],
            "--root and --option are not used with --dataset synthetic",
        ),
        (["--dataset", "synthetic", "--split", "colour"], "valid: appearance, motion"),
        (
            ["--dataset", "davis17", "--root", "x", "--by-size"],
            "--by-size, --clips and --wording need",
        ),
    ],
)
def test_cli_dataset_errors(extra, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(tmp_path), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_synthetic_samples_limited():
    from training.evaluate import _load_samples

    args = build_parser().parse_args(
        ["--checkpoint", "c", "--dataset", "synthetic", "--split", "motion", "--limit", "3"]
    )
    view = _load_samples(args)
    assert len(view) == 3
    samples = list(view)
    assert len(samples) == 3
    assert all(isinstance(s, Sample) and s.split == "motion" and s.flow is None for s in samples)
    both = _load_samples(build_parser().parse_args(["--checkpoint", "c", "--dataset", "synthetic"]))
    assert len(both) > 3


def test_cli_limit_samples_every_split_in_proportion(capsys):
    """``--limit N`` is a quick look at the whole test set, not at the first split's head."""
    from training.evaluate import _load_samples

    argv = ["--checkpoint", "c", "--dataset", "synthetic", "--clips", "4"]
    everything = list(_load_samples(build_parser().parse_args(argv)))
    view = _load_samples(build_parser().parse_args([*argv, "--limit", "10"]))
    picked = list(view)
    assert len(picked) == len(view) == 10
    counts = {s: sum(p.split == s for p in picked) for s in ("appearance", "motion")}
    share = sum(p.split == "appearance" for p in everything) / len(everything)
    assert counts["appearance"] > 0 and counts["motion"] > 0
    assert abs(counts["appearance"] / 10 - share) <= 0.1 + 1e-9

    # the picks are samples of the full set, in its order, none repeated
    def key(s):
        return (s.split, s.video_id, s.frame_index, s.object_id, s.expression)

    keys = [key(s) for s in everything]
    positions = [keys.index(key(s)) for s in picked]
    assert positions == sorted(set(positions))


def test_cli_table_says_figures_are_percent(tiny_checkpoint, capsys):
    argv = ["--checkpoint", str(tiny_checkpoint), "--backend", "torch", "--dataset", "synthetic"]
    out = _run_cli(
        [*argv, "--split", "motion", "--limit", "2", "--size", "64x64", "--no-progress"], capsys
    )
    assert "figures in %" in out


def test_cli_synthetic_by_size_labels_match_the_generator():
    from training.evaluate import _load_samples
    from training.synthetic import fixed_test_dataset

    argv = ["--checkpoint", "c", "--dataset", "synthetic", "--split", "appearance"]
    view = _load_samples(build_parser().parse_args([*argv, "--clips", "3", "--by-size"]))
    base = fixed_test_dataset("appearance", flow_preset=None)
    samples = list(view)
    assert {s.split for s in samples} <= {"appearance/small", "appearance/big"}
    for i, sample in enumerate(samples):
        seed, target, _ = base.locate(i)
        size = base.clip(seed)[0].targets[target].size
        assert sample.split == f"appearance/{size}"
        assert np.array_equal(sample.mask, base[i].mask)


@pytest.mark.slow
def test_cli_export_onnx_matches_torch(tiny_checkpoint, tiny_export, tmp_path, capsys):
    """Real ONNX Runtime on an export folder: same table as the torch engine (on the session's
    export, about a minute the first time)."""
    common = ["--dataset", "synthetic", "--split", "appearance", "--limit", "8"]
    common += ["--size", "64x64", "--no-progress"]
    onnx_argv = ["--checkpoint", str(tiny_export), "--backend", "onnx", *common]
    _run_cli([*onnx_argv, "--json", str(tmp_path / "onnx.json")], capsys)
    torch_argv = ["--checkpoint", str(tiny_checkpoint), "--backend", "torch", *common]
    _run_cli([*torch_argv, "--json", str(tmp_path / "pt.json")], capsys)
    onnx = json.loads((tmp_path / "onnx.json").read_text())
    torch_ = json.loads((tmp_path / "pt.json").read_text())
    assert onnx["backend"] == "onnx" and torch_["backend"] == "torch"
    for key in ("oIoU", "mIoU"):
        assert onnx["referring"]["overall"][key] == pytest.approx(
            torch_["referring"]["overall"][key], abs=0.02
        )


def test_cli_davis17_real_format(tiny_checkpoint, tmp_path, capsys):
    """The CLI on a tiny Ref-DAVIS17 tree in the published layout (void ring, two annotators)."""
    from fixtures_real import davis_expected, make_davis

    root = make_davis(tmp_path / "davis").root
    out_json = tmp_path / "davis.json"
    argv = ["--checkpoint", str(tiny_checkpoint), "--backend", "torch", "--dataset", "davis17"]
    argv += ["--root", str(root), "--size", "64x64", "--json", str(out_json), "--no-progress"]
    out = _run_cli(argv, capsys)
    assert "J&F" in out and "DAVIS protocol: semi-supervised" in out
    data = json.loads(out_json.read_text())
    expected = davis_expected(split="val", annotators=(1, 2), full_video=False)
    assert data["samples"] == len(expected)
    assert list(data["referring"]) == ["val", "overall"]
    # One sequence per (annotator, object, expression); semi-supervised drops first and last
    # frame, so every sequence here (3 or 4 frames) keeps 1 or 2 frames.
    sequences = sum(
        len(
            {
                (e.video_id, e.object_id, e.expression)
                for e in davis_expected(split="val", annotators=(n,), full_video=False)
            }
        )
        for n in (1, 2)
    )
    d = data["davis"]["overall"]
    assert d["objects"] == sequences and d["objects_skipped"] == 0
    assert d["J&F"] == pytest.approx((d["J"] + d["F"]) / 2)
    # Annotator 1 only, all frames kept.
    argv += ["--option", "annotator=1", "--protocol", "all"]
    _run_cli(argv, capsys)
    data = json.loads(out_json.read_text())
    assert data["samples"] == len(davis_expected(split="val", annotators=(1,), full_video=False))
    assert data["davis"]["overall"]["protocol"] == "all"
    assert data["meta"]["options"] == {"annotator": 1}


SHIPPED = BASELINE_CHECKPOINT  # the synthetic-only model: these checks are synthetic


def test_evaluate_scores_exactly_the_masks_the_stream_draws(tmp_path):
    """12 frames of the demo through the stream's session, then the same frames as evaluation
    samples whose ground truth is the stream's mask: every sample scores IoU 1 exactly.
    (When evaluation resized logits and the stream resized probabilities, 495 of 54 103 mask
    pixels differed here.)"""
    from engine.demo import demo_clip
    from engine.session import Segmenter
    from engine.sources import FileSource
    from export.engines import create_engine

    engine = create_engine("torch", SHIPPED, input_size=(160, 160))
    clip = demo_clip("moving")
    seg = Segmenter(engine)
    seg.set_phrase(clip.phrase)
    with FileSource(clip.path) as src:
        frames = [src.read().image for _ in range(12)]
    samples = []
    for t, frame in enumerate(frames):
        seg.reset()  # evaluation is online per sample: previous frame, then this frame
        if t:
            seg.observe(frames[t - 1])
        mask = seg.step(frame).mask
        assert 0 < mask.sum() < mask.size  # a real mask, not a trivial one
        samples.append(
            Sample(
                frame=frame,
                prev_frame=frames[t - 1] if t else None,
                flow=None,
                expression=clip.phrase,
                mask=mask.astype(np.uint8),
                dataset="synthetic",
                video_id="demo",
                frame_index=t,
                object_id="0",
                split="demo",
            )  # fmt: skip
        )
    report = evaluate(engine, samples, progress=False)
    s = report.referring[OVERALL]
    assert s["samples"] == 12 and s["mIoU"] == 1.0 and s["oIoU"] == 1.0 and s["P@0.9"] == 1.0


def test_cli_spatial_and_all_wordings_build_the_held_out_spatial_split():
    from training.evaluate import _load_samples

    def view(*extra):
        argv = ["--checkpoint", "c", "--dataset", "synthetic", "--split", "appearance",
                "--clips", "3", *extra]  # fmt: skip
        return _load_samples(build_parser().parse_args(argv))

    spatial = list(view("--wording", "spatial"))
    assert spatial and all(s.split == "appearance/spatial" for s in spatial)
    assert all(s.attributes["position"] in s.expression.replace("most", "").split()
               or s.attributes["position"] in ("top", "bottom") for s in spatial)  # fmt: skip
    grammar = view("--wording", "grammar")
    assert len(view("--wording", "all")) == 2 * len(grammar) + len(spatial)
