"""The shared embedded broker: one nats-server per data directory, for every command.

Commands given no ``--nats-url`` (``consume``, ``publish``, ``billing serve``, …) use the
broker of their data directory: they find it running, or start it. It runs in its own
session and belongs to none of them: stopping or killing the command that started it
leaves it serving the others. A broker found dead is started again on its old port
(when free), so clients reconnect to the address they already know. ``billing-gateway
broker status`` shows it and ``billing-gateway broker stop`` stops it (and the running
commands leave it stopped until a command starts again).

The data directory holds ``nats.url``, ``nats.pid``, ``broker.lock`` (taken while one
command finds or starts the broker, so two never start two) and the store, ``nats/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .natsd import EmbeddedNats, free_port, listening

__all__ = ["BrokerInfo", "ensure", "keep_alive", "resolve_nats", "status", "stop"]

log = logging.getLogger(__name__)

_started: list[EmbeddedNats] = []  # never collected while this process runs: no ResourceWarning


@dataclass(frozen=True)
class BrokerInfo:
    url: str
    port: int
    pid: int | None
    data_dir: Path
    running: bool


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "broker.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    """``pid`` is a live (not zombie) nats-server."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and b"nats-server" in cmdline.split(b"\0", 1)[0]


def _read_int(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def status(data_dir: Path) -> BrokerInfo | None:
    """The data directory's broker as last recorded (None when none was ever started)."""
    try:
        url = (data_dir / "nats.url").read_text().strip()
        port = int(url.rsplit(":", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    pid = _read_int(data_dir / "nats.pid")
    running = listening(port) and (pid is None or _alive(pid))
    return BrokerInfo(url, port, pid, data_dir, running)


def ensure(data_dir: Path, timeout: float = 10.0, *, unless_stopped: bool = False) -> BrokerInfo | None:
    """The running broker of ``data_dir``, started (on its old port when free) if needed.
    With ``unless_stopped``, a broker stopped by hand stays stopped (None)."""
    data_dir = data_dir.resolve()
    with _locked(data_dir):
        info = status(data_dir)
        if info is not None and info.running:
            return info
        if unless_stopped and (data_dir / "nats.stopped").exists():
            return None
        if info is not None and info.pid is not None and _alive(info.pid):
            _terminate(info.pid, timeout)  # alive but not answering: replace it
        port = info.port if info is not None and not listening(info.port) else free_port()
        server = EmbeddedNats(data_dir / "nats", port, detached=True).start(timeout)
        _started.append(server)
        with contextlib.suppress(FileNotFoundError):
            (data_dir / "nats.stopped").unlink()
        (data_dir / "nats.url").write_text(server.url + "\n")
        (data_dir / "nats.pid").write_text(f"{server.pid}\n")
        log.info(
            "started the shared nats-server at %s (pid %s, data in %s); "
            "`billing-gateway --data-dir %s broker stop` stops it",
            server.url, server.pid, data_dir, data_dir,
        )  # fmt: skip
        return BrokerInfo(server.url, port, server.pid, data_dir, True)


def stop(data_dir: Path, timeout: float = 10.0) -> BrokerInfo | None:
    """Stops the data directory's broker; returns what was recorded (None if nothing was)."""
    data_dir = data_dir.resolve()
    with _locked(data_dir):
        info = status(data_dir)
        (data_dir / "nats.stopped").touch()  # first: a command's keep-alive must not restart it
        if info is not None and info.pid is not None and _alive(info.pid):
            _terminate(info.pid, timeout)
        with contextlib.suppress(FileNotFoundError):
            (data_dir / "nats.pid").unlink()
        return info


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def resolve_nats(nats_url: str | None, data_dir: Path) -> str:
    """``nats_url``; or the shared broker of ``data_dir``, started if not yet running."""
    if nats_url:
        log.info("using NATS at %s", nats_url)
        return nats_url
    info = ensure(data_dir)
    assert info is not None
    log.info("using the shared nats-server at %s (data in %s)", info.url, info.data_dir)
    return info.url


async def keep_alive(data_dir: Path, stop_event: asyncio.Event, every_s: float = 1.0) -> None:
    """Starts the shared broker again whenever it is found dead, until ``stop_event``."""
    while not stop_event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), every_s)
        info = status(data_dir.resolve())
        stopped_by_hand = (data_dir / "nats.stopped").exists()
        if stop_event.is_set() or stopped_by_hand or (info is not None and info.running):
            continue
        log.warning("the shared nats-server of %s is not running; starting it again", data_dir)
        try:
            await asyncio.to_thread(ensure, data_dir, unless_stopped=True)
        except Exception as exc:
            log.error("could not start the shared nats-server: %s", exc)
