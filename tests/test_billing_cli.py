"""``billing-gateway billing`` as real processes: keys, the outbox, ``serve`` (API,
dispatcher, scheduler, usage ingestion) on the embedded nats-server followed by a gateway
daemon, and every error as one line on standard error with exit code 2."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import msgspec
import nats
import pytest
import sqlalchemy as sa
from billing_gateway.billing.api import SCOPES
from billing_gateway.billing.client import BillingClient
from billing_gateway.billing.schema import tables
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.workers.dispatcher import Dispatcher
from billing_gateway.natsd import EmbeddedNats, free_port
from billing_gateway.stream import EVENTS_STREAM, ensure_stream

from .conftest import POSTGRES_URL
from .processes import CLI, Daemon


def test_keys_create_prints_a_working_key_once(tmp_path: Path) -> None:
    db = str(tmp_path / "billing.db")
    done = subprocess.run(
        [*CLI, "billing", "--db", db, "keys", "create", "--scope", "billing:plans:read"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    secret = done.stdout.strip()
    assert secret.startswith("bgk_") and "not shown again" in done.stderr
    assert secret not in Path(db).read_bytes().decode("latin-1"), "only its hash is stored"


def test_serve_end_to_end_with_a_gateway_daemon(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = str(tmp_path / "billing.db")
    env = {**os.environ, "BILLING_GATEWAY_DATA_DIR": str(data)}
    key = subprocess.run(
        [*CLI, "billing", "--db", db, "keys", "create", "--scope", "billing:*"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    with open(tmp_path / "billing.log", "wb") as log:
        billing = subprocess.Popen(
            [*CLI, "billing", "--db", db, "serve", "--http", f"127.0.0.1:{port}", "--cycle-every", "0.2"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    gateway = Daemon(tmp_path / "gw", None)
    (tmp_path / "gw").mkdir()
    gateway.data_dir = data  # the same embedded nats-server
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/openapi.json", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        gateway.start()
        with BillingClient(url, key) as c:
            c.create_plan(id="plan_pro", name="Pro", currency="USD", included_budget="25", price="9")
            customer = c.create_customer("Acme", "a@acme.io")
            c.create_subscription(customer.id, "plan_pro")
            deadline = time.monotonic() + 20
            while (
                gateway.request("GET", f"/v1/budgets/{customer.id}")[0] != 200 and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            status, budget = gateway.request("GET", f"/v1/budgets/{customer.id}")
            assert status == 200 and budget["total"] == 25_000_000 and budget["plan_id"] == "plan_pro"
            assert budget["decimal"]["total"] == "25"
            status, decision = gateway.post("/v1/spend", {"tenant_id": customer.id, "amount": 30_000_000})
            assert status == 403 and decision["reason"] == "insufficient_budget"
        billing.send_signal(signal.SIGTERM)
        assert billing.wait(30) == 0, "SIGTERM stops the API and its loops cleanly"
        assert gateway.terminate() == 0
    finally:
        for process in (billing, gateway.process):
            if process is not None and process.poll() is None:
                process.kill()


def billing(db: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "billing", "--db", db, *args], capture_output=True, text=True, timeout=60, env=env
    )


def one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The error a failed command printed: exit code 2, one line on stderr, nothing on stdout."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == "", done.stdout
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr
    return done.stderr


def api_keys(db: str) -> int:
    with BillingStore.open(db).engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(tables["api_keys"])).scalar_one())


@pytest.mark.parametrize("scope", ["foo", "a b", "", "billing:plans:read billing:*", "billing:"])
def test_keys_create_refuses_a_scope_the_api_does_not_define(tmp_path: Path, scope: str) -> None:
    db = str(tmp_path / "billing.db")
    done = billing(db, "keys", "create", "--scope", "billing:plans:read", "--scope", scope)
    error = one_line_error(done, f"invalid choice: {scope!r}")
    assert all(repr(valid) in error for valid in ("billing:*", *SCOPES)), "it lists the valid ones"
    assert api_keys(db) == 0, "nothing written"


def test_keys_create_help_lists_the_scopes(tmp_path: Path) -> None:
    done = billing(str(tmp_path / "billing.db"), "keys", "create", "--help")
    assert done.returncode == 0
    assert all(scope in done.stdout for scope in ("billing:*", *SCOPES)), done.stdout


def test_keys_create_binds_only_an_existing_customer(tmp_path: Path) -> None:
    db = str(tmp_path / "billing.db")
    one_line_error(billing(db, "keys", "create", "--scope", "billing:*", "--customer", "cus_nope"),
                   "customer cus_nope not found")  # fmt: skip
    assert api_keys(db) == 0, "nothing written"
    store = BillingStore.open(db)
    customer = store.create_customer("Acme", "a@acme.io")
    done = billing(db, "keys", "create", "--scope", "billing:customers:read", "--customer", customer.id)
    assert done.returncode == 0, done.stderr
    principal = store.authenticate(done.stdout.strip())
    assert principal is not None and principal.customer_id == customer.id
    assert principal.scopes == {"billing:customers:read"}


UNREACHABLE = "postgresql://nobody@127.0.0.1:1/x"
ACTIONS = {
    "keys": ["keys", "create", "--scope", "billing:*"],
    "outbox list": ["outbox", "list"],
    "outbox redrive": ["outbox", "redrive", "--all"],
    "dispatch": ["dispatch"],
    "serve": ["serve", "--http", "127.0.0.1:1"],
}


@pytest.mark.parametrize("action", ACTIONS)
def test_an_unreachable_database_is_a_one_line_error(tmp_path: Path, action: str) -> None:
    env = {**os.environ, "BILLING_GATEWAY_DATA_DIR": str(tmp_path / "data")}
    done = billing(UNREACHABLE, *ACTIONS[action], env=env)
    one_line_error(done, "billing-gateway billing: error: database postgresql://nobody@127.0.0.1:1/x: ",
                   "Connection refused")  # fmt: skip
    assert not (tmp_path / "data").exists(), "no broker started"


def test_a_database_password_is_not_printed(tmp_path: Path) -> None:
    one_line_error(billing("postgresql://nobody:s3cret@127.0.0.1:1/x", "outbox", "list"), "nobody:***@")
    assert "s3cret" not in billing("postgresql://nobody:s3cret@127.0.0.1:1/x", "outbox", "list").stderr


@pytest.mark.parametrize("action", ACTIONS)
def test_a_missing_sqlite_directory_is_a_one_line_error(tmp_path: Path, action: str) -> None:
    env = {**os.environ, "BILLING_GATEWAY_DATA_DIR": str(tmp_path / "data")}
    db = tmp_path / "missing" / "billing.db"
    one_line_error(billing(str(db), *ACTIONS[action], env=env), f"the directory {db.parent} does not exist")
    assert not db.parent.exists() and not (tmp_path / "data").exists()


def test_a_file_that_is_not_a_database_is_a_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "billing.db"
    db.write_bytes(b"not a database at all\n" * 100)
    one_line_error(billing(str(db), "outbox", "list"), "file is not a database")


def test_serve_on_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, "BILLING_GATEWAY_DATA_DIR": str(tmp_path / "data")}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = billing(str(tmp_path / "billing.db"), "serve", "--http", f"127.0.0.1:{port}", env=env)
    one_line_error(done, f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert not (tmp_path / "data").exists(), "no broker started, nothing left running"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["serve", "--http", "127.0.0.1:99999"], "a port in 1..65535"),
        (["serve", "--http", "8088"], "expected HOST:PORT"),
        (["serve", "--cycle-every", "nan"], "a positive number of seconds"),
        (["serve", "--cycle-every", "-1"], "a positive number of seconds"),
        (["outbox", "list", "--limit", "0"], "an integer in 1..1000000"),
        (["outbox", "list", "--status", "lost"], "invalid choice: 'lost'"),
        (["outbox", "redrive"], "give --all or the seq of each row"),
        (["outbox", "redrive", "--all", "3"], "give --all or the seq of each row"),
        (["outbox", "redrive", "99999999999999999999"], "an integer in 1..9223372036854775807"),
        (["outbox", "redrive", "١٢"], "an integer in 1..9223372036854775807"),
        (["outbox", "frobnicate"], "invalid choice: 'frobnicate'"),
        (["keys", "create"], "the following arguments are required: --scope"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    one_line_error(billing(str(tmp_path / "billing.db"), *args), fragment)


def cli_url(store: BillingStore) -> str:
    """A ``--db`` for a child process that opens the same database (and PostgreSQL schema)."""
    if store.engine.dialect.name == "sqlite":
        return str(store.engine.url.database)
    with store.engine.connect() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def test_outbox_list_and_redrive_dead_rows(store: BillingStore, tmp_path: Path) -> None:
    """Rows the broker rejected (no stream yet) go dead; ``outbox list`` shows them with their
    error, ``redrive`` brings them back once the stream exists, and they are published in order."""
    db = cli_url(store)
    for i in range(4):
        store.create_customer(f"C{i}", f"c{i}@x.io")
    seqs = [seq for seq, _ in store.list_events()]

    async def dispatch(create_stream: bool) -> list[str]:
        with EmbeddedNats(tmp_path / "nats") as server:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            if create_stream:
                await ensure_stream(js)
            dispatcher = Dispatcher(store, js, max_attempts=1, create_missing_stream=False)
            while await dispatcher.dispatch_once():
                pass
            ids = []
            if create_stream:
                info = await js.stream_info(EVENTS_STREAM)
                for seq in range(info.state.first_seq, info.state.last_seq + 1):
                    message = await js.get_msg(EVENTS_STREAM, seq)
                    ids.append(msgspec.json.decode(message.data or b"")["event_id"])
            await nc.close()
            return ids

    asyncio.run(dispatch(create_stream=False))
    listed = billing(db, "outbox", "list", "--status", "dead")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["SEQ", "EVENT_ID", "EVENT_TYPE", "STATUS", "ATTEMPTS", "LAST_ERROR"]
    assert [int(row.split()[0]) for row in rows] == seqs
    assert all(row.split()[2:5] == ["customer.created", "dead", "1"] for row in rows), rows
    assert all("no stream for subject billing.events.customer.created" in row for row in rows), rows
    assert listed.stderr == "4 of 4 dead rows\n"
    limited = billing(db, "outbox", "list", "--limit", "1")
    assert len(limited.stdout.splitlines()) == 2 and "1 of 4 outbox rows; --limit 4" in limited.stderr

    one_line_error(billing(db, "outbox", "redrive", str(seqs[0]), "999999"), "no outbox row with seq 999999")
    assert billing(db, "outbox", "list", "--status", "pending").stdout.count("\n") == 1, "nothing changed"
    done = billing(db, "outbox", "redrive", str(seqs[0]), str(seqs[1]))
    assert (done.returncode, done.stdout) == (0, "redrove 2 rows: pending again, attempts reset\n")
    again = billing(db, "outbox", "redrive", str(seqs[0]))
    one_line_error(again, f"only dead rows can be redriven: seq {seqs[0]} is pending")
    pending = billing(db, "outbox", "list", "--status", "pending").stdout.splitlines()[1:]
    assert [(int(r.split()[0]), r.split()[4]) for r in pending] == [(seqs[0], "0"), (seqs[1], "0")]
    done = billing(db, "outbox", "redrive", "--all")
    assert (done.returncode, done.stdout) == (0, "redrove 2 rows: pending again, attempts reset\n")

    published = asyncio.run(dispatch(create_stream=True))
    assert published == [msgspec.json.decode(p)["event_id"] for _, p in store.list_events()], "in order"
    assert "dead" not in billing(db, "outbox", "list").stdout
