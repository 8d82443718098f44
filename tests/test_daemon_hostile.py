"""Issue 7.11: hostile input to the daemon and to ``publish``: 400s naming the problem,
one-line rejections, no 500, no traceback, and the process keeps serving."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import nats
import pytest
from billing_gateway.natsd import EmbeddedNats

from .processes import Daemon, publish_all
from .test_broker import cli
from .test_durability import current, wait_until


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/v1/check?tenant_id=x&amount=%C2%B2", None, "amount"),
        ("GET", "/v1/check?tenant_id=x&amount=" + "9" * 5000, None, "amount"),
        ("GET", "/v1/check?tenant_id=x&amount=18446744073709551616", None, "amount"),
        ("GET", "/v1/check?tenant_id=x&amount=-1", None, "amount"),
        ("GET", "/v1/check?tenant_id=" + "x" * 300 + "&amount=1", None, "tenant_id"),
        ("GET", "/v1/check?tenant_id=" + "%C3%A9" * 200 + "&amount=1", None, "tenant_id"),
        ("POST", "/v1/spend", ('{"tenant_id": "' + "é" * 200 + '", "amount": 1}').encode(), "tenant_id"),
        ("POST", "/v1/spend", b'{"tenant_id": "x", "amount": ' + b"9" * 5000 + b"}", None),
        ("POST", "/v1/spend", b'{"tenant_id": "x", "amount": 9223372036854775808}', "amount"),
        ("POST", "/v1/spend", b"\xff", None),
        ("POST", "/v1/spend", b"[" * 20_000 + b"]" * 20_000, None),
        ("POST", "/v1/spend", b'{"tenant_id": ' + b"[" * 20_000, None),
        ("POST", "/v1/spend", b'{"tenant_id": "\\ud800", "amount": 1}', None),
        ("POST", "/v1/check", b'{"tenant_id": "x", "amount": true}', "amount"),
        ("POST", "/v1/check", b'{"tenant_id": "x", "amount": 1.5}', "amount"),
        ("GET", "/v1/budgets/%ED%A0%80", None, "tenant_id"),
    ],
)
def test_malformed_requests_are_400(
    daemon: Daemon, method: str, path: str, body: bytes | None, field: str | None
) -> None:
    status, answer = daemon.request(method, path, body)
    assert status in (400, 404), answer
    assert isinstance(answer, dict) and answer["error"]
    if field is not None and status == 400:
        assert answer["field"] == field, answer
    assert daemon.request("GET", "/healthz")[0] == 200
    log = daemon.log.read_text()
    assert "Traceback" not in log and "level=ERROR" not in log, log


def test_garbage_http_is_refused_without_a_traceback(daemon: Daemon) -> None:
    for garbage in (
        b"\x16\x03\x01\x00\xa5garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \x00\x01\r\n\r\n",
        b"\xff" * 100 + b"\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s:
            s.sendall(garbage)
            s.recv(1024)
    assert daemon.request("GET", "/healthz")[0] == 200
    log = daemon.log.read_text()
    assert "Traceback" not in log and "level=ERROR" not in log, log


def test_idle_and_trickling_connections_are_closed(tmp_path: Path, server: EmbeddedNats) -> None:
    d = Daemon(tmp_path, server.url, "--idle-timeout", "1").start()
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as idle:
        start = time.monotonic()
        assert idle.recv(1024) == b""  # closed by the server
        assert time.monotonic() - start < 5
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as trickle:
        start = time.monotonic()
        closed = False
        for char in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            try:
                trickle.sendall(bytes([char]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - start > 6:
                break
        if not closed:
            trickle.settimeout(5)
            try:
                closed = trickle.recv(1024) == b""
            except OSError:
                closed = True
        assert closed and time.monotonic() - start < 8
    assert d.request("GET", "/healthz")[0] == 200
    assert d.terminate() == 0


def test_publish_survives_a_deep_line_and_takes_whole_json_files(
    tmp_path: Path, server: EmbeddedNats
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(
        "\n".join([current().decode(), "[" * 50_000, current("sub_2", "cus_2").decode()]) + "\n"
    )
    done = cli(tmp_path, "--nats-url", server.url, "publish", str(source))
    assert done.stdout.strip() == "published 2, duplicates 0, rejected 1", done.stderr
    assert "line 2: rejected" in done.stderr and "Traceback" not in done.stderr
    assert done.returncode == 1

    array = tmp_path / "events.json"
    array.write_text(
        "[\n" + ",\n".join([current("sub_4", "cus_4").decode(), current("sub_5", "cus_5").decode()]) + "\n]\n"
    )
    assert (
        cli(tmp_path, "--nats-url", server.url, "publish", str(array)).stdout.strip()
        == "published 2, duplicates 0, rejected 0"
    )
    examples = sorted((Path(__file__).parent.parent / "examples" / "events").glob("*.json"))
    for example in examples:
        done = cli(tmp_path, "--nats-url", server.url, "publish", str(example))
        assert done.returncode == 0 and "rejected 0" in done.stdout, done.stderr


def test_dead_letters_are_listed_and_redriven(tmp_path: Path, server: EmbeddedNats) -> None:
    d = Daemon(tmp_path, server.url, "--no-usage-report").start()
    publish_all(server.url, [b'{"event_id": "evt_poison", "event_type": "subscription.created", "data": {}}'])
    wait_until(lambda: d.request("GET", "/readyz")[1]["cursor"] == 1)
    listed = cli(tmp_path, "--nats-url", server.url, "dlq", "list")
    assert (
        listed.returncode == 0
        and "invalid_event" in listed.stdout
        and "billing.events.poison" in listed.stdout
    )
    seq = listed.stdout.split("\t", 1)[0]
    assert cli(tmp_path, "--nats-url", server.url, "dlq", "redrive", "999").returncode == 2
    redriven = cli(tmp_path, "--nats-url", server.url, "dlq", "redrive", seq)
    assert redriven.returncode == 0 and redriven.stdout.strip() == "redrove 1"
    wait_until(lambda: d.request("GET", "/readyz")[1]["cursor"] == 2)  # applied again: dead again
    wait_until(lambda: "invalid_event" in cli(tmp_path, "--nats-url", server.url, "dlq", "list").stdout)
    assert d.terminate() == 0


def test_budgets_are_listed_a_page_at_a_time(tmp_path: Path, server: EmbeddedNats) -> None:
    publish_all(server.url, [current(f"sub_{i}", f"cus_{i:02d}") for i in range(5)])
    d = Daemon(tmp_path, server.url).start()
    wait_until(lambda: d.request("GET", "/readyz")[1].get("cursor") == 5)
    status, first = d.request("GET", "/v1/budgets?limit=2")
    assert status == 200 and [b["tenant_id"] for b in first["budgets"]] == ["cus_00", "cus_01"]
    status, rest = d.request("GET", f"/v1/budgets?after={first['next']}&limit=10")
    assert [b["tenant_id"] for b in rest["budgets"]] == ["cus_02", "cus_03", "cus_04"] and rest[
        "next"
    ] is None
    assert d.request("GET", "/v1/budgets?limit=0")[0] == 400
    wait_until(lambda: "current with the stream at cursor 5" in d.log.read_text(), timeout=5)
    assert d.terminate() == 0


def test_an_empty_dead_letter_stream_lists_nothing(
    daemon: Daemon, server: EmbeddedNats, tmp_path: Path
) -> None:
    daemon.wait_for("/readyz")
    listed = cli(tmp_path, "--nats-url", server.url, "dlq", "list")
    assert listed.returncode == 0 and listed.stdout == "" and "0 dead letters" in listed.stderr, listed.stderr
    assert cli(tmp_path, "--nats-url", server.url, "dlq", "redrive", "--all").stdout.strip() == "redrove 0"


def test_poison_waiting_in_the_stream_at_start_is_dead_lettered(tmp_path: Path, server: EmbeddedNats) -> None:
    # Delivery starts before the dead-letter stream exists on a new broker: the first
    # poison messages must still reach it, not only an ERROR line.
    poison = [
        b'{"event_id": "evt_p%d", "event_type": "subscription.created", "data": {}}' % i for i in range(5)
    ]
    publish_all(server.url, poison)
    d = Daemon(tmp_path, server.url, "--no-usage-report").start()
    wait_until(lambda: d.request("GET", "/readyz")[1].get("cursor") == len(poison))
    listed = cli(tmp_path, "--nats-url", server.url, "dlq", "list")
    assert listed.returncode == 0 and listed.stdout.count("invalid_event") == len(poison), listed.stdout
    assert "could not dead-letter" not in d.log.read_text()
    assert d.terminate() == 0


def test_poison_at_a_reused_sequence_of_a_recreated_stream_is_dead_lettered(
    tmp_path: Path, server: EmbeddedNats
) -> None:
    # The dead-letter stream deduplicates by message id (replicas dead-letter the same
    # message once); a recreated stream counts from 1 again, and its poison is not the old.
    async def recreate() -> None:
        nc = await nats.connect(server.url)
        await nc.jetstream().delete_stream("BILLING_EVENTS")
        await nc.drain()

    poison = b'{"event_id": "evt_p%d", "event_type": "subscription.created", "data": {}}'
    d = Daemon(tmp_path, server.url, "--no-usage-report").start()
    d.wait_for("/readyz")
    publish_all(server.url, [poison % 1])

    def letters() -> int:
        return cli(tmp_path, "--nats-url", server.url, "dlq", "list").stdout.count("invalid_event")

    wait_until(lambda: letters() == 1)
    asyncio.run(recreate())
    assert publish_all(server.url, [poison % 2]) == [1]
    wait_until(lambda: letters() == 2)
    assert d.terminate() == 0
