"""The prior-sharing measurement on the shipped default: the method checks out on itself."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import prior_sharing
from models.checkpoint import DEFAULT_CHECKPOINT
from models.files import OPENCV_DOC_DATA

pytestmark = pytest.mark.skipif(
    not (OPENCV_DOC_DATA / "tree.avi").is_file(), reason="needs opencv-doc's clips"
)


def test_the_prior_fed_its_own_features_is_the_prior():
    # What sharing would change is read by feeding the backbone's features into the prior's
    # remaining blocks; fed the prior's own, that path must give the prior's output exactly.
    from models.checkpoint import load_checkpoint
    from models.grounding import class_probabilities

    model, _, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    net = model.prior.net
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        own = class_probabilities(net, x)
        for last in (-1, 2, 10):
            again = prior_sharing._head_from(net, prior_sharing._upto(net, x, last), last)
            torch.testing.assert_close(again, own)


def test_the_table_covers_the_pyramid_and_the_flops_grow(tmp_path, capsys):
    out = tmp_path / "sharing.json"
    assert prior_sharing.main(["--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["shared_up_to"] for r in rows] == ["stem", "C1", "C2", "C3", "C4"]
    saved = [r["prior_flops_saved"] for r in rows]
    assert saved == sorted(saved) and saved[0] > 0 and saved[-1] < 1
    assert all(0 <= r["top1_kept"] <= 1 and 0 <= r["l1"] <= 2 for r in rows)
    assert "FLOPs saved" in capsys.readouterr().out and out.is_file()
