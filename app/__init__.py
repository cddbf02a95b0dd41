"""The local Gradio page: ``python -m app [--checkpoint DIR] [--backend onnx|torch] [--port 7860]``.

Modules: :mod:`app.ui` (the page), :mod:`app.processing` (clips and live sessions over the
stream's :class:`engine.session.Segmenter`), :mod:`app.engines` (engines shared between sessions),
:mod:`app.validation` (upload / phrase checks), :mod:`app.h264` (browser-playable mp4 through
ffmpeg), :mod:`app.plot` (latency plot), :mod:`app.examples` (example clips).
"""
