"""A real Triton Inference Server on loopback, from the ``nvidia-pytriton`` wheel's bundled binary.

For the tests and ``benchmarks/serving.py`` on machines without NVIDIA's container: the
``tritonserver`` binary inside PyPI's ``nvidia-pytriton`` 0.7.0 (Python backend only), in its
own virtual environment ``.venv-triton`` made from Debian's ``/usr/bin/python3`` by
``scripts/setup.sh`` (the package needs ``numpy<2``; the bundled Python-backend stub links
Debian's ``libpython3.11``). Production runs NVIDIA's container instead (README, "Many cameras").

    with LocalTritonServer("exports/lite0_triton") as server:
        engine = create_engine("triton", "exports/lite0_triton", url=server.grpc_url)

The server binds 127.0.0.1 only, is started as a child process and stopped by PID.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

__all__ = ["DEFAULT_ENV", "LocalTritonServer", "TritonEnvMissingError", "free_port", "server_env"]

logger = logging.getLogger(__name__)

#: The server's virtual environment, made by ``scripts/setup.sh``.
DEFAULT_ENV = Path(__file__).resolve().parents[1] / ".venv-triton"


class TritonEnvMissingError(RuntimeError):
    """The server's virtual environment (``nvidia-pytriton``) is not installed."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(env_dir: str | Path = DEFAULT_ENV) -> tuple[Path, Path, Path]:
    """``(site-packages, tritonserver binary, python stub)`` inside the server's environment.

    Raises:
        TritonEnvMissingError: the environment or the package is missing (says how to install it).
    """
    env_dir = Path(env_dir)
    found = sorted(
        env_dir.glob("lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver")
    )
    if not found:
        raise TritonEnvMissingError(
            f"no tritonserver in {env_dir}: bash scripts/setup.sh creates it "
            "(/usr/bin/python3 -m venv .venv-triton; pip install nvidia-pytriton==0.7.0 "
            "onnxruntime==1.20.1)"
        )
    binary = found[0]
    site = binary.parents[3]
    minor = site.parent.name.removeprefix("python")  # "3.11"
    stub = site / "pytriton" / "tritonserver" / "python_backend_stubs" / minor
    return site, binary, stub / "triton_python_backend_stub"


class LocalTritonServer:
    """Start ``tritonserver`` on a model repository; stop it on :meth:`stop` / context exit.

    Args:
        repository: Model repository folder (``python -m export --triton``).
        http_port: HTTP port (default: a free one).
        grpc_port: gRPC port (default: a free one).
        env_dir: The server's virtual environment.
        ready_timeout_s: How long :meth:`start` waits for every model to be ready.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        env_dir: str | Path = DEFAULT_ENV,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.repository = Path(repository)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.env_dir = Path(env_dir)
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._work: tempfile.TemporaryDirectory | None = None

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:<grpc port>``."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``127.0.0.1:<http port>``."""
        return f"127.0.0.1:{self.http_port}"

    def _backends(self, site: Path, stub: Path) -> Path:
        """A backend directory with the Python backend and the stub for this Python version."""
        assert self._work is not None
        dst = Path(self._work.name) / "backends" / "python"
        src = site / "pytriton" / "tritonserver" / "backends" / "python"
        dst.mkdir(parents=True)
        for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(src / f, dst / f)
        shutil.copy2(stub, dst / "triton_python_backend_stub")
        return dst.parent

    def start(self) -> LocalTritonServer:
        """Start the server and wait until it and every model are ready.

        Raises:
            TritonEnvMissingError: the server environment is missing.
            RuntimeError: the server exited or was not ready in time (with its log's tail).
        """
        site, binary, stub = server_env(self.env_dir)
        if self._work is None:  # kept across a stop() and start() (a restart)
            self._work = tempfile.TemporaryDirectory(prefix="hinet-triton-")
            self._backends(site, stub)
        backends = Path(self._work.name) / "backends"
        env = dict(os.environ)
        env["PATH"] = f"{self.env_dir / 'bin'}:{env.get('PATH', '')}"  # the stub's Python env
        libs = site / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = f"{libs}:{env['LD_LIBRARY_PATH']}" if env.get(
            "LD_LIBRARY_PATH") else str(libs)  # fmt: skip
        env.pop("PYTHONPATH", None)
        self.log_path = Path(self._work.name) / "tritonserver.log"
        cmd = [
            str(binary),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={backends}",
            f"--cache-directory={Path(self._work.name) / 'caches'}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--exit-timeout-secs=5",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own binary, fixed arguments)
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        logger.info("tritonserver pid %d on %s / %s", self.process.pid, self.grpc_url,
                    self.http_url)  # fmt: skip
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"tritonserver not ready after {self.ready_timeout_s} s:\n{self.log_tail()}"
        )

    def ready(self) -> bool:
        """Whether the server says it (and every model) is ready."""
        try:
            with urllib.request.urlopen(  # noqa: S310 (loopback health endpoint)
                f"http://{self.http_url}/v2/health/ready", timeout=1.0
            ) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its work folder."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        """:meth:`stop` and remove the work folder."""
        self.stop()
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface: serve a repository until Ctrl-C."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.triton_local",
        description="Run the real tritonserver of PyPI's nvidia-pytriton on a model repository "
        "(written by python -m export --triton ... --triton-backend python), on loopback.",
    )
    p.add_argument("repository", type=Path, help="the Triton model repository")
    p.add_argument("--grpc-port", type=int, default=8001, help="(default 8001)")
    p.add_argument("--http-port", type=int, default=8000, help="(default 8000)")
    return p


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual use
    """Serve until Ctrl-C; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = LocalTritonServer(
        args.repository, http_port=args.http_port, grpc_port=args.grpc_port
    ).start()
    print(f"tritonserver ready: gRPC {server.grpc_url}, HTTP {server.http_url}; Ctrl-C stops it")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
