"""The ONNX Runtime backend runs in a process where ``import torch`` fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[2]

# Installed before anything else: every import of torch (or a torch submodule) raises.
SCRIPT = r"""
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this process ({name})")
        return None

sys.meta_path.insert(0, NoTorch())
try:
    import torch  # noqa: F401
    raise SystemExit("torch import was not blocked")
except ImportError:
    pass

import numpy as np
from export.engines import create_engine
import engine.backends.onnx_backend, engine.backends.tensorrt_backend, export.tensorrt, engine.manifest  # noqa: F401
from export.check import real_frame_inputs

folder, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
eng = create_engine("onnx", folder, input_size=(h, w), intra_op_threads=1)
text = eng.encode_text("the person riding a bike")
image, flow = real_frame_inputs(eng.config, size=(h, w), count=1, start=60)[0]
logits = eng.segment(image, flow, text)
print(json.dumps({
    "torch_loaded": any(m == "torch" or m.startswith("torch.") for m in sys.modules),
    "shape": list(logits.shape),
    "logits": logits.ravel()[::97].tolist(),
}))
"""


def test_onnx_backend_works_without_torch(tiny_export):
    export_dir = tiny_export
    h, w = 96, 128
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(export_dir), str(h), str(w)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] is False
    assert out["shape"] == [1, 1, h, w]
    # Same numbers as the ONNX backend in this (torch-enabled) process.
    from export.check import real_frame_inputs
    from export.engines import create_engine

    eng = create_engine("onnx", export_dir, input_size=(h, w))
    image, flow = real_frame_inputs(eng.config, size=(h, w), count=1, start=60)[0]
    ref = eng.segment(image, flow, eng.encode_text("the person riding a bike")).ravel()[::97]
    np.testing.assert_allclose(np.asarray(out["logits"], np.float32), ref, atol=1e-5)


def test_blocker_really_blocks_torch():
    """The subprocess set-up fails loudly if torch were importable through the blocker."""
    code = SCRIPT.split("import numpy as np")[0] + "\nprint('blocked')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "blocked", proc.stderr


@pytest.mark.parametrize(
    "module", ["engine.backends.onnx_backend", "engine.loading", "engine.manifest"]
)
def test_torch_free_modules_do_not_import_torch(module):
    code = f"import sys, {module}; print(any(m == 'torch' for m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
