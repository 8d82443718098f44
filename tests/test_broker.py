"""Issue 7.8: the shared embedded broker belongs to no command. Real processes only."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from billing_gateway import broker
from billing_gateway.natsd import free_port, listening

from .processes import CLI, Daemon
from .test_durability import current, wait_until


def cli(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--data-dir", str(data), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_the_broker_outlives_the_command_that_started_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Daemon(tmp_path / "a", None)
    (tmp_path / "a").mkdir()
    first.data_dir = data
    first.start()
    first.wait_for("/readyz")
    info = broker.status(data.resolve())
    assert info is not None and info.running

    second = Daemon(tmp_path / "b", None)
    (tmp_path / "b").mkdir()
    second.data_dir = data
    second.start()
    second.wait_for("/readyz")
    assert broker.status(data.resolve()) == info, "the second command found the first one's broker"

    first.kill9()  # the starter dies hard: the broker stays, and serves the other
    assert broker.status(data.resolve()) == info
    done = cli(data, "publish", "-", stdin=current().decode())
    assert done.returncode == 0, done.stderr
    wait_until(lambda: second.request("GET", "/v1/budgets/cus_1")[0] == 200)
    assert second.terminate() == 0
    assert broker.status(data.resolve()) == info, "stopping a command never stops the broker"

    status = cli(data, "broker", "status")
    assert status.returncode == 0 and info.url in status.stdout
    stopped = cli(data, "broker", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not listening(info.port)
    assert cli(data, "broker", "status").returncode == 1


def test_a_dead_broker_comes_back_on_its_port_and_clients_reconnect(tmp_path: Path) -> None:
    d = Daemon(tmp_path, None).start()
    data = d.data_dir
    d.wait_for("/readyz")
    info = broker.status(data.resolve())
    assert info is not None and info.pid is not None
    os.kill(info.pid, signal.SIGKILL)
    wait_until(lambda: d.request("GET", "/readyz")[0] == 503)
    d.wait_for("/readyz", timeout=30)  # restarted by the daemon's keep-alive, on the same port
    again = broker.status(data.resolve())
    assert again is not None and again.running and again.port == info.port and again.pid != info.pid
    assert cli(data, "publish", "-", stdin=current().decode()).returncode == 0
    wait_until(lambda: d.request("GET", "/v1/budgets/cus_1")[0] == 200)
    log = d.log.read_text()
    assert "Traceback" not in log
    assert log.count("disconnected from NATS") == 1
    assert d.terminate() == 0
    cli(data, "broker", "stop")


def test_billing_serve_keeps_working_when_consume_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = str(tmp_path / "billing.db")
    port = free_port()
    env = {**os.environ, "BILLING_GATEWAY_DATA_DIR": str(data)}
    gateway = Daemon(tmp_path, None)
    gateway.data_dir = data
    gateway.start()
    gateway.wait_for("/readyz")
    with open(tmp_path / "billing.log", "wb") as log:
        billing = subprocess.Popen(
            [*CLI, "billing", "--db", db, "serve", "--http", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        wait_until(lambda: listening(port))
        assert gateway.terminate() == 0
        time.sleep(2.0)
        assert billing.poll() is None
        text = (tmp_path / "billing.log").read_text()
        assert "Traceback" not in text, text
        still = broker.status(data.resolve())
        assert still is not None and still.running
    finally:
        billing.send_signal(signal.SIGTERM)
        assert billing.wait(30) == 0
        cli(data, "broker", "stop")


def test_unreachable_broker_is_a_one_line_error(tmp_path: Path) -> None:
    done = cli(tmp_path, "--nats-url", f"nats://127.0.0.1:{free_port()}", "publish", "-", stdin="")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("billing-gateway: error: cannot connect to NATS")
    missing = cli(tmp_path, "publish", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr


def test_two_daemons_on_one_snapshot_is_a_one_line_error(tmp_path: Path) -> None:
    first = Daemon(tmp_path, None).start()
    try:
        port = free_port()
        done = cli(
            first.data_dir, "consume", "--snapshot", str(first.snapshot), "--http", f"127.0.0.1:{port}"
        )
        assert done.returncode == 2 and "used by another running daemon" in done.stderr
        busy = cli(
            first.data_dir,
            "consume",
            "--snapshot",
            str(tmp_path / "b.snap"),
            "--http",
            f"127.0.0.1:{first.port}",
        )
        assert busy.returncode == 2 and "Traceback" not in busy.stderr
        assert busy.stderr.strip().splitlines()[-1].startswith("billing-gateway: error:")
    finally:
        assert first.terminate() == 0
        cli(first.data_dir, "broker", "stop")
