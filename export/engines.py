"""Give me an engine for this model: build what the backend needs (once, cached), then load it.

The one entry point above :mod:`engine` (which only loads ready artefacts) and :mod:`export`
(which builds them). Every program that opens a model calls :func:`create_engine`:

============  ==========================================================================
backend       what it is given -> what it loads
============  ==========================================================================
``torch``     checkpoint folder -> as it is
``onnx``      checkpoint folder -> its ONNX export, made once into the cache
              (:func:`cached_export`); export folder -> as it is
``tensorrt``  checkpoint or export folder -> TensorRT plans built once into the cache
              (:func:`export.tensorrt.build_export_engines`); engine file -> as it is
``triton``    Triton model repository -> as it is (the server runs the graphs)
============  ==========================================================================

Torch-free: a checkpoint is exported by ``python -m export`` in a child process, so the ONNX
Runtime and TensorRT paths never import torch in the caller's process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.backends import backend_class, load_engine, parse_device
from engine.base import Engine
from engine.loading import cache_root, model_input_size, source_kind
from engine.manifest import (
    MANIFEST_FILE,
    ExportError,
    checkpoint_sha256,
    read_manifest,
    verify_files,
)
from engine.preprocess import check_input_size

__all__ = ["EXPORT_LAYOUT", "TENSORRT_BUILD_OPTIONS", "cached_export", "create_engine"]

logger = logging.getLogger(__name__)

#: Bumped when the exported graphs' inputs or outputs change (2: the prior models' frame graph
#: gained ``prior_conf``), so a cached export of an older layout is exported again.
EXPORT_LAYOUT = 2
#: Options of the TensorRT plan build (not of the engine): cache folder, workspace in MiB,
#: largest batch.
TENSORRT_BUILD_OPTIONS = ("cache_dir", "workspace_mb", "max_batch")


def _project_root() -> Path:
    return Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (another process exporting the same key waits)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock; the atomic rename below still holds
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _usable(folder: Path) -> bool:
    if not (folder / MANIFEST_FILE).is_file():
        return False
    try:
        verify_files(folder, read_manifest(folder))
        return True
    except ExportError as exc:
        logger.warning("cached export %s is unusable (%s); exporting again", folder, exc)
        return False


def cached_export(
    checkpoint: str | Path, *, fp16: bool = False, opset: int = 18, int8: bool = False
) -> Path:
    """Export a checkpoint once into ``cache_root()/exports/<key>/`` and return that folder.

    The key is the checkpoint's :func:`~engine.manifest.checkpoint_sha256`, the opset, the
    precision set and :data:`EXPORT_LAYOUT`, so a changed checkpoint (or graph layout) gets a
    fresh export. The export runs ``python -m export`` in a child process (it needs torch;
    this process may not have it); its progress lines go to this process's stderr. Processes
    that ask for the same export at once export it once: the others wait on a lock file, and
    the folder appears whole (written beside it, then renamed).

    Raises:
        ExportError: the exporter failed (its last lines are in the message).
    """
    digest = checkpoint_sha256(checkpoint)
    key = f"{digest[:24]}-op{opset}-{'fp16' if fp16 else 'fp32'}{'-int8' if int8 else ''}"
    key += f"-l{EXPORT_LAYOUT}"
    out = cache_root() / "exports" / key
    if _usable(out):
        return out
    with _exclusive(out.with_name(key + ".lock")):
        if _usable(out):  # another process exported it while this one waited
            return out
        print(
            f"exporting {checkpoint} to ONNX (first use of this model; cached in {out})",
            file=sys.stderr,
            flush=True,
        )
        tmp = out.with_name(f"{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _run_exporter(checkpoint, tmp, fp16=fp16, opset=opset, int8=int8)
        except BaseException:  # a failed or interrupted export leaves nothing half-written
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(out, ignore_errors=True)  # an unusable earlier export
        tmp.replace(out)
    return out


def _run_exporter(checkpoint: str | Path, out: Path, *, fp16: bool, opset: int, int8: bool) -> None:
    """``python -m export --checkpoint ... --out out`` in a child process, its lines shown.

    Raises:
        ExportError: the exporter failed (its last lines are in the message).
    """
    cmd = [sys.executable, "-m", "export", "--checkpoint", str(checkpoint), "--out", str(out)]
    cmd += ["--opset", str(opset), *(["--fp16"] if fp16 else []), *(["--int8"] if int8 else [])]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_project_root()), env.get("PYTHONPATH", "")) if p
    )
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        for line in proc.stdout or ():  # the exporter's progress, shown as it comes
            tail.append(line.rstrip())
            print(f"  {line.rstrip()}", file=sys.stderr, flush=True)
    if proc.returncode != 0 or not (out / MANIFEST_FILE).is_file():
        raise ExportError(
            f"exporting {checkpoint} failed (python -m export exited {proc.returncode}): "
            + (" | ".join(tail) or "no message")
        )


def create_engine(
    backend: str,
    source: str | Path,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    input_size: tuple[int, int] | None = None,
    **options: Any,
) -> Engine:
    """An engine for a model, with whatever the backend needs built first (see the table above).

    Args:
        backend: One of :data:`engine.backends.BACKENDS`.
        source: A checkpoint folder, an export folder, a TensorRT engine file or a Triton
            repository.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        input_size: Network input ``(H, W)``, multiples of 32 (default: the model's own).
        **options: The backend's options (:func:`engine.backends.load_engine`), and for
            ``tensorrt`` the plan build's :data:`TENSORRT_BUILD_OPTIONS`.

    Returns:
        An :class:`~engine.base.Engine`.

    Raises:
        ValueError: unknown backend, a source no backend can use, bad size, precision or option.
        BackendUnavailable: the backend's runtime is not installed (checked before any export).
        ExportError: the export or the plan build failed.
    """
    cls = backend_class(backend)
    kind = source_kind(source)
    input_size = check_input_size(input_size or model_input_size(source))
    parse_device(device)
    build = {k: options.pop(k) for k in TENSORRT_BUILD_OPTIONS if k in options}
    if build and backend != "tensorrt":
        raise ValueError(f"{', '.join(build)}: TensorRT build options, for backend 'tensorrt'")
    below_target = bool(options.pop("int8_below_target", False))
    cls.check_request(device=device, precision=precision, **options)  # before any slow work
    artefact = Path(source)
    if backend in ("onnx", "tensorrt") and kind == "checkpoint":
        artefact = cached_export(artefact, fp16=precision == "fp16", int8=precision == "int8")
    if backend == "tensorrt" and kind in ("checkpoint", "export"):
        from export.tensorrt import build_export_engines

        if "workspace_mb" in build:
            build["workspace_bytes"] = int(build.pop("workspace_mb")) << 20
        _, artefact = build_export_engines(
            artefact, precision=precision, opt_size=input_size, **build
        )
    return load_engine(backend, artefact, device=device, precision=precision,
                       input_size=input_size, int8_below_target=below_target, **options)  # fmt: skip
