"""The proxy's configuration file, prices and token estimates (no server needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from billing_gateway.proxy import ConfigError, load_config, parse_config
from billing_gateway.proxy.pricing import cost, estimate_embedding_tokens, estimate_prompt_tokens

TARGET = {"name": "t", "base_url": "http://127.0.0.1:9/v1", "input_price": "2.50", "output_price": "10"}


def config(**doc: Any) -> dict[str, Any]:
    return {"targets": [TARGET], **doc}


def test_a_full_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-secret")
    digest = hashlib.sha256(b"sk-hashed").hexdigest()
    path = tmp_path / "proxy.toml"
    path.write_text(f"""
listen = "0.0.0.0:9999"
default_max_tokens = 256
[events]
snapshot = "p.snap"
[tenants]
"sk-plain" = "cus_a"
"sha256:{digest}" = "cus_b"
[[targets]]
name = "primary"
base_url = "http://127.0.0.1:9000/v1/"
api_key = "env:UPSTREAM_KEY"
input_price = "2.50"
output_price = "10.00"
max_connections = 8
[[policies]]
id = "default"
match = "true"
strategy = "weighted"
targets = [{{ name = "primary", weight = 3 }}]
""")
    c = load_config(path)
    assert c.listen == ("0.0.0.0", 9999) and c.default_max_tokens == 256
    assert c.events.snapshot == tmp_path / "p.snap"
    assert c.tenant_for("sk-plain") == "cus_a" and c.tenant_for("sk-hashed") == "cus_b"
    assert c.tenant_for("sk-other") is None
    t = c.targets["primary"]
    assert (t.base_url, t.api_key, t.input_price, t.output_price) == (
        "http://127.0.0.1:9000/v1", "sk-secret", 2_500_000, 10_000_000
    )  # fmt: skip
    (policy,) = c.policies
    assert policy.strategy == "weighted" and policy.targets[0].weight == 3
    assert policy.targets[0].cost == 10_000_000


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"targets": []}, "targets"),
        (config(listen="nowhere"), "listen"),
        (config(colour="blue"), "colour"),
        ({"targets": [{**TARGET, "input_price": "0.0000001"}]}, "targets[0].input_price"),
        ({"targets": [{**TARGET, "input_price": 2.5}]}, "targets[0].input_price"),
        ({"targets": [{**TARGET, "output_price": "-1"}]}, "targets[0].output_price"),
        ({"targets": [{**TARGET, "base_url": "ftp://x"}]}, "targets[0].base_url"),
        ({"targets": [TARGET, TARGET]}, "targets[1].name"),
        ({"targets": [{**TARGET, "timeout_s": 0}]}, "targets[0].timeout_s"),
        ({"targets": [{**TARGET, "api_key": "env:BILLING_GATEWAY_TEST_UNSET"}]}, "targets[0].api_key"),
        (config(policies=[{"id": "p", "targets": ["nope"]}]), "policies[0].targets[0]"),
        (config(policies=[{"targets": ["t"]}]), "policies[0].id"),
        (config(tenants={"sha256:abc": "cus"}), "tenants.sha256:abc"),
        (config(events={"unknown_tenant": "maybe"}), "events.unknown_tenant"),
        (config(default_max_tokens=True), "default_max_tokens"),
    ],
)
def test_errors_name_the_key(doc: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=f"^{named.replace('[', '.').replace(']', '.')}"):
        parse_config(doc)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("listen = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8 at byte 0"):
        load_config(bad)


def test_cost_is_exact_and_rounds_up_once() -> None:
    t = parse_config(config()).targets["t"]
    assert cost(t, 1_000_000, 1_000_000) == 12_500_000  # $2.50 + $10.00
    assert cost(t, 1, 0) == 3  # 2.5 micro-units, rounded up
    assert cost(t, 2, 0) == 5
    assert cost(t, 0, 0) == 0


def test_prompt_estimate_is_an_upper_bound_of_bpe_tokens() -> None:
    messages = [{"role": "user", "content": "héllo wörld " * 10}]
    text_bytes = len(("user" + "héllo wörld " * 10).encode())
    assert estimate_prompt_tokens(messages) >= text_bytes + 4 + 3
    assert estimate_embedding_tokens([1, 2, 3]) == 3
    assert estimate_embedding_tokens([[1, 2], [3]]) == 3
    assert estimate_embedding_tokens("abc") == 3
