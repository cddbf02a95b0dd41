"""Pieces every benchmark report shares: the CPU's name, package versions and the JSON file."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

from engine.latency import json_safe


def cpu_name() -> str:
    """CPU model name from ``/proc/cpuinfo`` (else :func:`platform.processor`, else the machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def versions(**modules: str) -> dict[str, str]:
    """``{"python": ..., key: version}`` for each ``key=module`` that imports (others left out).

    Example: ``versions(opencv="cv2", numpy="numpy")``.
    """
    out = {"python": platform.python_version()}
    for key, name in modules.items():
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        version = getattr(module, "__version__", None)
        if version is None:  # a namespace-like package (tritonclient): ask its distribution
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        out[key] = version
    return out


def write_json(path: Path, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON and return ``path``.

    The data goes through :func:`engine.latency.json_safe` (NaN as ``null``); parent folders are
    created; the file ends with a newline.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(data), indent=indent) + "\n")
    return path
