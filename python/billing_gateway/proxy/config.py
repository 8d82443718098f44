"""The proxy's configuration file (TOML), read once at start-up.

Every problem is a :class:`ConfigError` naming the key (``targets[1].input_price``), so
``billing-gateway proxy`` prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billing_gateway import RoutingPolicy, Target
from billing_gateway.cliargs import host_port
from billing_gateway.errors import InvalidAmount
from billing_gateway.leases.names import MODES, checked_key_prefix, checked_replica_id
from billing_gateway.money import to_micros

__all__ = [
    "ConfigError",
    "EventsConfig",
    "LeasesConfig",
    "ProxyConfig",
    "TargetConfig",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class TargetConfig:
    """An upstream: where it is, how it is priced (micro-units per million tokens) and
    the limits of its connection pool."""

    name: str
    base_url: str
    api_key: str | None
    input_price: int
    output_price: int
    model: str | None = None
    """The model sent upstream (the request's model when unset)."""
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    max_connections: int = 100


@dataclass(frozen=True)
class EventsConfig:
    """Where budgets and policies come from: the options of ``consume``."""

    nats_url: str | None = None
    snapshot: Path | None = None
    snapshot_every_s: float = 1.0
    unknown_tenant: str = "deny"
    grace_period_s: float = 86_400.0
    report_usage: bool = True
    usage_every_s: float = 5.0
    billing_url: str | None = None
    billing_key: str | None = None


@dataclass(frozen=True)
class LeasesConfig:
    """Budgets shared with the other replicas through Redis leases (``[leases]``): the
    options of ``consume --redis-url``."""

    redis_url: str
    mode: str = "strict"
    lease_ttl_s: float = 10.0
    replica_id: str | None = None
    key_prefix: str = "bg"


@dataclass(frozen=True)
class ProxyConfig:
    listen: tuple[str, int] = ("127.0.0.1", 8090)
    events: EventsConfig = field(default_factory=EventsConfig)
    keys: Mapping[str, str] = field(default_factory=dict)
    """API key -> tenant id."""
    hashed_keys: Mapping[str, str] = field(default_factory=dict)
    """sha256 hex digest of an API key -> tenant id."""
    targets: Mapping[str, TargetConfig] = field(default_factory=dict)
    policies: tuple[RoutingPolicy, ...] = ()
    default_max_tokens: int = 4096
    """The output tokens a chat request may produce when it does not say (sent upstream too)."""
    cooldown_s: float = 30.0
    """How long a failed target stays down when the upstream gave no ``Retry-After``."""
    drain_timeout_s: float = 5.0
    """How long the upstream of a stream whose client left is read for its usage."""
    hold_ttl_s: float = 600.0
    """The lifetime of a request's hold: longer than any request may take."""
    leases: LeasesConfig | None = None
    """Budgets shared by replicas (none: this proxy's table alone)."""

    def tenant_for(self, api_key: str) -> str | None:
        tenant = self.keys.get(api_key)
        if tenant is None and self.hashed_keys:
            tenant = self.hashed_keys.get(hashlib.sha256(api_key.encode()).hexdigest())
        return tenant


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    value = table.get(key, default)
    if value is not default and (
        not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
    ):
        raise ConfigError(f"{where}{key}: expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({str: "a string", int: "an integer", float: "a number", bool: "true or false",
                        list: "a list", dict: "a table"}[k] for k in kinds)  # fmt: skip


def _positive(table: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = float(_get(table, key, (int, float), where, default))
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}{key}: expected a positive number, got {value!r}")
    return value


def _count(table: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value: int = _get(table, key, int, where, default)
    if value < 1:
        raise ConfigError(f"{where}{key}: expected a positive integer, got {value!r}")
    return value


def _unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"{where}{extra[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _secret(value: str | None, where: str) -> str | None:
    """A literal, or ``env:NAME`` read from the environment."""
    if value is None or not value.startswith("env:"):
        return value
    found = os.environ.get(value[4:])
    if not found:
        raise ConfigError(f"{where}: the environment variable {value[4:]} is not set")
    return found


def _price(table: Mapping[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if value is None:
        raise ConfigError(f'{where}{key}: required (budget currency per million tokens, e.g. "2.50")')
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"{where}{key}: expected a decimal string or an integer, got {value!r}")
    try:
        micros = to_micros(value)
    except InvalidAmount as exc:
        raise ConfigError(f"{where}{key}: {exc}") from None
    if micros < 0:
        raise ConfigError(f"{where}{key}: must not be negative")
    return micros


_TARGET_KEYS = {"name", "base_url", "api_key", "input_price", "output_price", "model", "timeout_s",
                "connect_timeout_s", "max_connections"}  # fmt: skip


def _target(raw: Any, index: int) -> TargetConfig:
    where = f"targets[{index}]."
    if not isinstance(raw, dict):
        raise ConfigError(f"targets[{index}]: expected a table")
    _unknown(raw, _TARGET_KEYS, where)
    name = _get(raw, "name", str, where, None)
    base_url = _get(raw, "base_url", str, where, None)
    if not name:
        raise ConfigError(f"{where}name: required")
    if not base_url or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}base_url: expected an http:// or https:// URL, got {base_url!r}")
    return TargetConfig(
        name=name,
        base_url=base_url.rstrip("/"),
        api_key=_secret(_get(raw, "api_key", str, where, None), f"{where}api_key"),
        input_price=_price(raw, "input_price", where),
        output_price=_price(raw, "output_price", where),
        model=_get(raw, "model", str, where, None),
        timeout_s=_positive(raw, "timeout_s", where, 60.0),
        connect_timeout_s=_positive(raw, "connect_timeout_s", where, 5.0),
        max_connections=_count(raw, "max_connections", where, 100),
    )


def _policy(raw: Any, index: int, targets: Mapping[str, TargetConfig]) -> RoutingPolicy:
    where = f"policies[{index}]."
    if not isinstance(raw, dict):
        raise ConfigError(f"policies[{index}]: expected a table")
    _unknown(raw, {"id", "priority", "match", "strategy", "targets"}, where)
    names = _get(raw, "targets", list, where, None)
    if not names:
        raise ConfigError(f"{where}targets: required, a list of target names")
    chosen = []
    for j, entry in enumerate(names):
        item = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(item, dict) or item.get("name") not in targets:
            raise ConfigError(f"{where}targets[{j}]: not the name of a [[targets]] entry: {entry!r}")
        weight = _get(item, "weight", int, f"{where}targets[{j}].", 1)
        chosen.append(Target(name=item["name"], weight=weight, cost=targets[item["name"]].output_price))
    policy_id = _get(raw, "id", str, where, None)
    if not policy_id:
        raise ConfigError(f"{where}id: required")
    return RoutingPolicy(
        id=policy_id,
        priority=_get(raw, "priority", int, where, 100),
        match_expression=_get(raw, "match", str, where, "true"),
        strategy=_get(raw, "strategy", str, where, "failover"),
        targets=tuple(chosen),
    )


def _events(raw: Any, base: Path) -> EventsConfig:
    if not isinstance(raw, dict):
        raise ConfigError("events: expected a table")
    where = "events."
    _unknown(raw, {f.name for f in EventsConfig.__dataclass_fields__.values()}, where)
    snapshot = _get(raw, "snapshot", str, where, None)
    unknown_tenant = _get(raw, "unknown_tenant", str, where, "deny")
    if unknown_tenant not in ("deny", "allow"):
        raise ConfigError(f'{where}unknown_tenant: expected "deny" or "allow", got {unknown_tenant!r}')
    return EventsConfig(
        nats_url=_get(raw, "nats_url", str, where, None),
        snapshot=base / snapshot if snapshot else None,
        snapshot_every_s=_positive(raw, "snapshot_every_s", where, 1.0),
        unknown_tenant=unknown_tenant,
        grace_period_s=_positive(raw, "grace_period_s", where, 86_400.0),
        report_usage=_get(raw, "report_usage", bool, where, True),
        usage_every_s=_positive(raw, "usage_every_s", where, 5.0),
        billing_url=_get(raw, "billing_url", str, where, None),
        billing_key=_secret(_get(raw, "billing_key", str, where, None), f"{where}billing_key"),
    )


def _leases(raw: Any) -> LeasesConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("leases: expected a table")
    where = "leases."
    _unknown(raw, {f.name for f in LeasesConfig.__dataclass_fields__.values()}, where)
    redis_url = _get(raw, "redis_url", str, where, None)
    if not redis_url or not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{where}redis_url: required, a redis:// URL, got {redis_url!r}")
    mode = _get(raw, "mode", str, where, "strict")
    if mode not in MODES:
        raise ConfigError(f"{where}mode: expected {' or '.join(map(repr, MODES))}, got {mode!r}")
    replica_id = _get(raw, "replica_id", str, where, None)
    try:
        key_prefix = checked_key_prefix(_get(raw, "key_prefix", str, where, "bg"))
        replica_id = None if replica_id is None else checked_replica_id(replica_id)
    except ValueError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return LeasesConfig(
        redis_url=redis_url,
        mode=mode,
        lease_ttl_s=_positive(raw, "lease_ttl_s", where, 10.0),
        replica_id=replica_id,
        key_prefix=key_prefix,
    )


def _keys(raw: Any) -> tuple[dict[str, str], dict[str, str]]:
    if not isinstance(raw, dict):
        raise ConfigError("tenants: expected a table of API key = tenant id")
    plain: dict[str, str] = {}
    hashed: dict[str, str] = {}
    for key, tenant in raw.items():
        if not isinstance(tenant, str) or not tenant:
            raise ConfigError(f"tenants.{key[:8]}…: expected a tenant id string")
        if key.startswith("sha256:"):
            digest = key[7:].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"tenants.{key[:15]}…: expected sha256: and 64 hex digits")
            hashed[digest] = tenant
        else:
            plain[key] = tenant
    return plain, hashed


_TOP_KEYS = {"listen", "events", "tenants", "targets", "policies", "default_max_tokens", "cooldown_s",
             "drain_timeout_s", "hold_ttl_s", "leases"}  # fmt: skip


def parse_config(doc: Mapping[str, Any], base: Path = Path()) -> ProxyConfig:
    """A configuration from a parsed TOML document; relative paths are read from ``base``."""
    _unknown(doc, _TOP_KEYS, "")
    listen = _get(doc, "listen", str, "", "127.0.0.1:8090")
    try:
        address = host_port(listen)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"listen: {exc}") from None
    raw_targets = _get(doc, "targets", list, "", [])
    targets: dict[str, TargetConfig] = {}
    for i, raw in enumerate(raw_targets):
        target = _target(raw, i)
        if target.name in targets:
            raise ConfigError(f"targets[{i}].name: {target.name!r} is defined twice")
        targets[target.name] = target
    if not targets:
        raise ConfigError("targets: at least one [[targets]] entry is required")
    policies = tuple(_policy(raw, i, targets) for i, raw in enumerate(_get(doc, "policies", list, "", [])))
    plain, hashed = _keys(doc.get("tenants", {}))
    return ProxyConfig(
        listen=address,
        events=_events(doc.get("events", {}), base),
        keys=plain,
        hashed_keys=hashed,
        targets=targets,
        policies=policies,
        default_max_tokens=_count(doc, "default_max_tokens", "", 4096),
        cooldown_s=_positive(doc, "cooldown_s", "", 30.0),
        drain_timeout_s=_positive(doc, "drain_timeout_s", "", 5.0),
        hold_ttl_s=_positive(doc, "hold_ttl_s", "", 600.0),
        leases=_leases(doc.get("leases")),
    )


def load_config(path: Path) -> ProxyConfig:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 at byte {exc.start}") from None
    return parse_config(doc, path.parent)
