"""Triton Inference Server backend: the two graphs run on a server, this process only talks to it.

Source: a model repository written by ``python -m export --triton REPO`` (this side reads its
``hinet_stream.json``, ``config.json`` and tokenizer; the server loads the models from the same
folder or a copy of it). ``tritonclient`` over gRPC (default ``127.0.0.1:8001``) or HTTP
(``127.0.0.1:8000``). The text is encoded once per phrase on the server (``text_encoder``), and
every frame is one ``frame_net`` request, which the server's dynamic batcher groups with the
requests of other streams.

Failures say what is wrong: the server is not reachable, a model is missing or not ready, or the
served model's inputs disagree with the repository's config. When the server goes away
mid-stream, a request retries (with a log line) until the server is back or ``retry_s`` passes.

One engine may serve several streams: each calling thread gets its own client (``tritonclient``'s
clients are not safe to share between threads), so the streams' requests reach the server side
by side and its dynamic batcher can group them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engine.base import (
    TEXT_INPUTS,
    BackendUnavailable,
    Engine,
    frame_inputs,
    frame_outputs,
    prior_classes,
    text_outputs,
)

__all__ = ["DEFAULT_URLS", "TritonEngine"]

logger = logging.getLogger(__name__)

#: Default server address per protocol (Triton's standard ports, loopback).
DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}
_TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.float16): "FP16"}


def _client_module(protocol: str) -> Any:
    if protocol not in DEFAULT_URLS:
        raise ValueError(f"unknown Triton protocol {protocol!r}; valid: grpc, http")
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as exc:
        raise BackendUnavailable(
            "the triton backend needs tritonclient: pip install 'hinet-stream[triton]' "
            f"(tritonclient[grpc,http]); {exc}"
        ) from exc
    return client


def read_repository(repo: str | Path) -> tuple[dict, Any, Any]:
    """``(description, config, tokenizer)`` of a repository written by ``export --triton``.

    Raises:
        ValueError: not such a repository, or its config/tokenizer is unreadable.
    """
    from engine.manifest import TRITON_REPOSITORY_FILE as REPOSITORY_FILE
    from engine.manifest import TRITON_REPOSITORY_FORMAT as REPOSITORY_FORMAT
    from models.checkpoint import CheckpointError, read_checkpoint_config

    repo = Path(repo)
    path = repo / REPOSITORY_FILE
    try:
        description = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{repo} is not a Triton repository written by python -m export --triton "
            f"({REPOSITORY_FILE}: {exc})"
        ) from exc
    if not isinstance(description, dict) or description.get("format") != REPOSITORY_FORMAT:
        raise ValueError(f"{path}: not a {REPOSITORY_FORMAT} file")
    try:
        config, tokenizer, _ = read_checkpoint_config(repo)
    except CheckpointError as exc:
        raise ValueError(f"Triton repository {repo}: {exc}") from exc
    return description, config, tokenizer


class TritonEngine(Engine):
    """Run ``text_encoder`` and ``frame_net`` on a Triton server.

    Args:
        config: The model's config (from the repository).
        tokenizer: Its tokenizer (from the repository).
        description: The repository's ``hinet_stream.json``.
        input_size: Network input ``(H, W)`` (inside the repository's side range).
        url: ``host:port`` of the server (default per protocol, loopback).
        protocol: ``"grpc"`` or ``"http"``.
        timeout_s: Per-request network timeout.
        retry_s: How long a request waits for a server that went away before it fails.
    """

    backend = "triton"

    def __init__(
        self,
        *,
        config: Any,
        tokenizer: Any,
        description: dict,
        input_size: tuple[int, int],
        url: str | None = None,
        protocol: str = "grpc",
        timeout_s: float = 10.0,
        retry_s: float = 30.0,
        precision: str = "fp32",
    ) -> None:
        super().__init__(
            config=config, tokenizer=tokenizer, input_size=input_size, precision=precision
        )
        lo, hi = description["min_side"], description["max_side"]
        if not all(lo <= s <= hi for s in self.input_size):
            raise ValueError(
                f"input size {input_size} is outside the repository's range: sides in [{lo}, {hi}]"
            )
        self._client_mod = _client_module(protocol)
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        self.timeout_s = float(timeout_s)
        self.retry_s = float(retry_s)
        self.models = dict(description["models"])
        self._text_out = text_outputs(config)
        self._frame_out = frame_outputs(config)
        self._frame_in = frame_inputs(config)
        self._local = threading.local()  # this thread's client
        self._clients: list[Any] = []  # every thread's, closed by close()
        self._clients_lock = threading.Lock()
        self._connect()
        self._check_models()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def check_request(cls, *, device: str, precision: str, **options: Any) -> None:
        """FP32 only (the server decides its own precision); options url, protocol, timeouts."""
        super().check_request(device=device, precision=precision)
        if precision != "fp32":
            raise ValueError("the triton backend serves the repository's graphs: use fp32")
        unknown = sorted(set(options) - {"url", "protocol", "timeout_s", "retry_s"})
        if unknown:
            raise ValueError(
                f"unknown triton options {unknown}; valid: protocol, retry_s, timeout_s, url"
            )
        _client_module(options.get("protocol", "grpc"))

    @classmethod
    def load(
        cls,
        resolved: Any,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        input_size: tuple[int, int],
        **options: Any,
    ) -> TritonEngine:
        """Connect to the server for the resolved repository (:func:`engine.loading.resolve`)."""
        description, config, tokenizer = read_repository(resolved.repository)
        return cls(config=config, tokenizer=tokenizer, description=description,
                   input_size=input_size, precision=precision, **options)  # fmt: skip

    @property
    def _client(self) -> Any:
        """The calling thread's client (made on its first request)."""
        client = getattr(self._local, "client", None)
        return client if client is not None else self._new_client()

    def _new_client(self) -> Any:
        client = self._client_mod.InferenceServerClient(url=self.url)
        self._local.client = client
        with self._clients_lock:
            self._clients.append(client)
        return client

    def _connect(self) -> None:
        try:
            live = self._new_client().is_server_live()
        except Exception as exc:  # connection refused, DNS, bad URL
            raise BackendUnavailable(
                f"Triton server at {self.url} ({self.protocol}) is not reachable: {exc}; start "
                "tritonserver on the repository (README, 'Many cameras')"
            ) from exc
        if not live:
            raise BackendUnavailable(f"Triton server at {self.url} is not live")

    def _check_models(self) -> None:
        """Every model is ready and its inputs match this repository's config."""
        expected = {self.models["text"]: TEXT_INPUTS, self.models["frame"]: self._frame_in}
        for name, inputs in expected.items():
            try:
                ready = self._client.is_model_ready(name)
            except Exception as exc:
                raise BackendUnavailable(f"Triton server at {self.url}: {exc}") from exc
            if not ready:
                raise ValueError(
                    f"model {name!r} is not ready on the Triton server at {self.url} "
                    "(missing from its repository, or it failed to load: see the server log)"
                )
            meta = self._as_json(self._client.get_model_metadata, name)
            got = {i["name"]: i["shape"] for i in meta["inputs"]}
            if set(got) != set(inputs):
                raise ValueError(
                    f"model {name!r} on {self.url} has inputs {sorted(got)}; this repository's "
                    f"model needs {sorted(inputs)}: the server serves another model"
                )
            n, c = self.config.text.max_tokens, self.config.text.width
            want = {"token_ids": [n], "token_mask": [n], "words": [n, c], "words_mask": [n],
                    "sentence": [c], "classes": [prior_classes(self.config)]}  # fmt: skip
            for key, dims in want.items():
                if key in got and [int(d) for d in got[key][1:]] != dims:
                    raise ValueError(
                        f"model {name!r} on {self.url}: input {key} has dims {got[key][1:]}, "
                        f"this repository's config needs {dims}: shapes disagree"
                    )

    # -- running -----------------------------------------------------------------------------
    def _infer(self, model: str, feeds: Mapping[str, np.ndarray], outputs: tuple[str, ...]):
        mod = self._client_mod
        inputs = []
        for name, arr in feeds.items():
            arr = np.ascontiguousarray(arr)
            tensor = mod.InferInput(name, list(arr.shape), _TYPES[arr.dtype])
            tensor.set_data_from_numpy(arr)
            inputs.append(tensor)
        wanted = [mod.InferRequestedOutput(n) for n in outputs]
        deadline = None
        while True:
            try:
                if self.protocol == "grpc":
                    result = self._client.infer(model, inputs, outputs=wanted,
                                                client_timeout=self.timeout_s)  # fmt: skip
                else:
                    result = self._client.infer(model, inputs, outputs=wanted)
                if deadline is not None:
                    logger.warning("triton: server at %s is back; requests resume", self.url)
                return {n: np.asarray(result.as_numpy(n), np.float32) for n in outputs}
            except Exception as exc:
                if not self._unreachable(exc):
                    raise ValueError(f"Triton model {model!r} refused the request: {exc}") from exc
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_s
                    logger.warning(
                        "triton: server at %s is unreachable (%s); retrying for %.0f s",
                        self.url, type(exc).__name__, self.retry_s,
                    )  # fmt: skip
                if now >= deadline:
                    raise BackendUnavailable(
                        f"Triton server at {self.url} unreachable for {self.retry_s:.0f} s: {exc}"
                    ) from exc
                time.sleep(0.2)
                self._reconnect()

    def _unreachable(self, exc: Exception) -> bool:
        text = str(exc).lower()
        markers = ("unavailable", "connection refused", "failed to connect", "connect failed",
                   "broken pipe", "connection reset", "socket closed", "deadline", "timed out",
                   "not ready", "no route")  # fmt: skip
        return isinstance(exc, (ConnectionError, OSError)) or any(m in text for m in markers)

    def _reconnect(self) -> None:
        """Replace this thread's client (the server restarted: its old connection is dead)."""
        old = getattr(self._local, "client", None)
        self._local.client = None
        if old is not None:
            with self._clients_lock:
                self._clients = [c for c in self._clients if c is not old]
            with contextlib.suppress(Exception):
                old.close()
        with contextlib.suppress(Exception):  # still down: the next request attempt will tell
            self._new_client()

    def run_text(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Text encoder on the server: ``token_ids``, ``token_mask`` -> float32 features."""
        missing = [n for n in TEXT_INPUTS if n not in inputs]
        if missing:
            raise ValueError(f"missing inputs {missing}; expected {', '.join(TEXT_INPUTS)}")
        feeds = {n: np.asarray(inputs[n], np.int64) for n in TEXT_INPUTS}
        return self._infer(self.models["text"], feeds, self._text_out)

    def run_frame(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Frame network on the server -> ``logits`` (and ``prior_conf``).

        ``logits`` (B, 1, H, W) float32; ``prior_conf`` (B, 1) with the grounding prior.
        """
        missing = [n for n in self._frame_in if n not in inputs]
        if missing:
            raise ValueError(f"missing inputs {missing}; expected {', '.join(self._frame_in)}")
        feeds = {n: np.asarray(inputs[n], np.float32) for n in self._frame_in}
        return self._infer(self.models["frame"], feeds, self._frame_out)

    def close(self) -> None:
        """Close every thread's client connection."""
        lock = getattr(self, "_clients_lock", None)
        if lock is None:  # construction failed before the clients existed
            return
        with lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):  # already closed / server gone
                client.close()
        self._local = threading.local()

    def statistics(self) -> dict:
        """The server's inference statistics of ``frame_net`` (batch sizes executed, counts)."""
        return self._as_json(self._client.get_inference_statistics, self.models["frame"])

    def _as_json(self, call, *args: Any) -> dict:
        """A server query's answer as a dict (gRPC returns protobuf unless asked for JSON)."""
        return call(*args, as_json=True) if self.protocol == "grpc" else call(*args)
