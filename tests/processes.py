"""Real processes and servers the integration tests drive: the ``consume`` daemon as a
child process, and helpers that publish to and read back a real stream."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import nats
from billing_gateway import InvalidEvent
from billing_gateway.natsd import free_port
from billing_gateway.stream import ensure_stream, publish_event

CLI = [sys.executable, "-m", "billing_gateway.cli"]


class Daemon:
    """``billing-gateway consume`` as a child process."""

    def __init__(self, tmp: Path, nats_url: str | None, *extra: str) -> None:
        self.port = free_port()
        self.snapshot = tmp / "gateway.snap"
        self.log = tmp / "daemon.log"
        self.data_dir = tmp / "data"
        self.nats_url = nats_url
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Daemon:
        url = ["--nats-url", self.nats_url] if self.nats_url else []
        command = [
            *CLI, "--data-dir", str(self.data_dir), *url, "consume",
            "--snapshot", str(self.snapshot), "--snapshot-every", "0.2",
            "--http", f"127.0.0.1:{self.port}", *self.extra,
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_for("/healthz")
        return self

    def wait_for(self, path: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                status, body = self.request("GET", path)
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{path} not 200 within {timeout}s:\n{self.log.read_text()}")

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        ctype = "json" if raw[:1] in (b"{", b"[") else "text"
        return status, json.loads(raw) if ctype == "json" else raw.decode()

    def post(self, path: str, doc: Any) -> tuple[int, Any]:
        return self.request("POST", path, json.dumps(doc).encode())

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def publish_all(url: str, events: list[bytes], pause_every: int = 0, pause_s: float = 0.0) -> list[int]:
    async def body() -> list[int]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await ensure_stream(js)
        seqs = []
        for i, raw in enumerate(events, 1):
            try:
                seqs.append((await publish_event(js, raw)).seq)
            except InvalidEvent:
                seqs.append((await js.publish("billing.events.poison", raw)).seq)
            if pause_every and i % pause_every == 0:
                await asyncio.sleep(pause_s)
        await nc.close()
        return seqs

    return asyncio.run(body())


def stream_in_order(url: str) -> list[bytes]:
    """Every message of the stream, by sequence."""

    async def body() -> list[bytes]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        info = await js.stream_info("BILLING_EVENTS")
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            out.append((await js.get_msg("BILLING_EVENTS", seq)).data or b"")
        await nc.close()
        return out

    return asyncio.run(body())
