"""The first hour with the ``billing-gateway`` command, as a new user meets it (issue 8)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from billing_gateway import broker
from billing_gateway.natsd import EmbeddedNats

from .processes import CLI


def run(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=60, env=env)


def test_version_and_help_name_defaults_and_variables() -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("billing-gateway ")
    for command in (["consume"], ["publish"], ["billing", "serve"], ["dlq", "list"], ["broker", "status"]):
        shown = run(*command, "--help")
        assert shown.returncode == 0, shown.stderr
    consume = run("consume", "--help").stdout
    assert "BILLING_GATEWAY_SNAPSHOT_EVERY" in consume and "default 1" in consume
    assert "--nats-url" in consume, "says the global options work after the command too"
    top = run("--help").stdout
    assert "BILLING_GATEWAY_NATS_URL" in top and "BILLING_GATEWAY_DATA_DIR" in top
    scopes = run("billing", "keys", "create", "--help").stdout
    assert "billing:customers:create" in scopes


def test_options_work_before_and_after_the_command(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        line = (
            Path(__file__).parent.parent / "examples" / "events" / "01_subscription_created.json"
        ).read_text()
        before = run("--nats-url", server.url, "publish", "-", stdin=line)
        after = run("publish", "-", "--nats-url", server.url, stdin=line)
        assert before.returncode == 0 and after.returncode == 0, (before.stderr, after.stderr)
        assert before.stdout.strip() == "published 1, duplicates 0, rejected 0"
        assert after.stdout.strip() == "published 0, duplicates 1, rejected 0"
    db = tmp_path / "b.db"
    key = run("billing", "keys", "create", "--scope", "billing:*", "--db", str(db))
    assert key.returncode == 0 and key.stdout.startswith("bgk_"), key.stderr
    assert db.exists()


def test_the_data_dir_is_one_well_known_place(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_GATEWAY_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    started = run("broker", "start", env=env)
    try:
        assert started.returncode == 0, started.stderr
        data = tmp_path / "xdg" / "billing-gateway"
        info = broker.status(data)
        assert info is not None and info.running
        elsewhere = subprocess.run(
            [*CLI, "broker", "status"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
        )
        assert elsewhere.returncode == 0 and info.url in elsewhere.stdout
    finally:
        run("broker", "stop", env=env)


def test_publish_never_succeeds_into_a_broker_nobody_follows(tmp_path: Path) -> None:
    done = run("--data-dir", str(tmp_path / "fresh"), "publish", "-", stdin="{}")
    assert done.returncode == 2
    assert "no broker is running" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "fresh" / "nats.pid").exists(), "no broker was started"


def test_bad_values_are_one_line_and_exit_2_from_flags_and_variables(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_GATEWAY_")}
    cases = [
        (["--log-level", "bogus", "--data-dir", data, "broker", "status"], {}, "--log-level"),
        (["--data-dir", data, "broker", "status", "--log-level", "nope"], {}, "--log-level"),
        (["--data-dir", data, "consume", "--redis-url", "notaurl"], {}, "--redis-url"),
        (["--data-dir", data, "consume", "--redis-url", "redis://h:99999"], {}, "--redis-url"),
        (["--data-dir", data, "consume", "--billing-url", "notaurl"], {}, "--billing-url"),
        (["--data-dir", data, "consume", "--billing-url", "http://h:x"], {}, "--billing-url"),
        (["--data-dir", data, "broker", "status"], {"BILLING_GATEWAY_LOG_LEVEL": "loud"}, "--log-level"),
        (["--data-dir", data, "consume"], {"BILLING_GATEWAY_UNKNOWN_TENANT": "maybe"}, "--unknown-tenant"),
        (["--data-dir", data, "consume"], {"BILLING_GATEWAY_LEASE_MODE": "bogus"}, "--lease-mode"),
    ]
    for args, variables, flag in cases:
        done = run(*args, env=clean | variables)
        assert done.returncode == 2, (args, variables, done.stderr)
        assert done.stderr.count("\n") == 1 and flag in done.stderr, (args, variables, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists(), "nothing was started"
    unrelated = clean | {"BILLING_GATEWAY_UNKNOWN_TENANT": "x"}
    allowed = run("--data-dir", data, "broker", "status", env=unrelated)
    assert allowed.returncode == 1 and "no broker" in allowed.stdout, "consume's variables are its own"


def test_a_configured_policy_that_does_not_compile_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        'listen = "127.0.0.1:1"\n[events]\nnats_url = "nats://127.0.0.1:1"\n'
        f'snapshot = "{tmp_path / "p.snap"}"\n[tenants]\n"sk-a" = "cus_a"\n'
        '[[targets]]\nname = "primary"\nbase_url = "http://127.0.0.1:1/v1"\napi_key = "x"\n'
        'input_price = "1"\noutput_price = "2"\n'
        '[[policies]]\nid = "broken"\npriority = 1\nmatch = "((("\nstrategy = "failover"\n'
        'targets = ["primary"]\n'
    )
    done = run("--data-dir", str(tmp_path / "data"), "--log-level", "ERROR", "proxy", "--config", str(config))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and '"broken"' in done.stderr and "Traceback" not in done.stderr
