"""``export.engines``: the one entry point that builds what a backend needs, then loads it."""

from __future__ import annotations

import shutil
import threading
import time

from engine.loading import source_kind


def test_two_first_uses_at_once_export_once(tiny_checkpoint, tiny_export, tmp_path, monkeypatch):
    """Two processes (here threads, each with its own lock handle) asking for the same export of
    a checkpoint at once: one exports, the other waits and reuses it; the folder appears whole."""
    import export.engines as engines

    monkeypatch.setenv("HINET_STREAM_CACHE", str(tmp_path))
    calls = []

    def exporter(checkpoint, out, **options):  # the child `python -m export`, quicker
        calls.append(out)
        time.sleep(0.5)  # long enough for the other caller to arrive while this one exports
        shutil.copytree(tiny_export, out)

    monkeypatch.setattr(engines, "_run_exporter", exporter)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(engines.cached_export(tiny_checkpoint)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]
    assert source_kind(results[0]) == "export" and calls[0].name.startswith(
        results[0].name + ".tmp"
    )
    assert not any(p.name.startswith(results[0].name + ".tmp") for p in results[0].parent.iterdir())
    assert engines.cached_export(tiny_checkpoint) == results[0] and len(calls) == 1  # cached


def test_a_failed_export_leaves_no_folder(tiny_checkpoint, tmp_path, monkeypatch):
    import pytest

    import export.engines as engines
    from engine.manifest import ExportError

    monkeypatch.setenv("HINET_STREAM_CACHE", str(tmp_path))

    def exporter(checkpoint, out, **options):  # dies half-way through writing
        out.mkdir(parents=True)
        (out / "text_encoder.onnx").write_bytes(b"half")
        raise ExportError("exporting failed (python -m export exited 1): boom")

    monkeypatch.setattr(engines, "_run_exporter", exporter)
    with pytest.raises(ExportError, match="boom"):
        engines.cached_export(tiny_checkpoint)
    assert [p.suffix for p in (tmp_path / "exports").iterdir()] == [".lock"]
