"""``billing-gateway proxy``: the daemon's service (the stream followed into the table,
snapshots, usage reported to billing, the broker kept alive) serving the proxy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from billing_gateway.consumer import EventConsumer
from billing_gateway.daemon import DaemonOptions, run

from .app import create_proxy_app
from .config import ProxyConfig

if TYPE_CHECKING:
    from billing_gateway.leases import BudgetLeases

__all__ = ["serve"]


def _with_config_policies(consumer: EventConsumer, config: ProxyConfig) -> None:
    """The configured policies are the gateway's local layer (replacing what the snapshot
    kept of an earlier configuration); ``routing_policy.*`` events keep their own layer,
    and an id billing has spoken about is billing's."""
    consumer.gateway.set_policies(config.policies)


def _lease_options(config: ProxyConfig) -> dict[str, Any]:
    """``[leases]`` as the daemon's options (``consume --redis-url`` and its companions)."""
    leases = config.leases
    if leases is None:
        return {}
    return {
        "redis_url": leases.redis_url,
        "lease_mode": leases.mode,
        "lease_ttl_s": leases.lease_ttl_s,
        "replica_id": leases.replica_id,
        "lease_key_prefix": leases.key_prefix,
    }


async def serve(config: ProxyConfig, *, data_dir: Path, nats_url: str | None = None) -> int:
    """Runs until SIGTERM/SIGINT. ``nats_url`` (the command line's) wins over the file's."""
    events = config.events
    host, port = config.listen
    options = DaemonOptions(
        nats_url=nats_url or events.nats_url,
        snapshot=events.snapshot or data_dir / "proxy.snap",
        snapshot_every_s=events.snapshot_every_s,
        host=host,
        port=port,
        data_dir=data_dir,
        grace_period_s=events.grace_period_s,
        unknown_tenant=events.unknown_tenant,
        report_usage=events.report_usage,
        usage_every_s=events.usage_every_s,
        billing_url=events.billing_url,
        billing_key=events.billing_key,
        **_lease_options(config),
    )

    def app(consumer: EventConsumer, leases: BudgetLeases | None) -> web.Application:
        _with_config_policies(consumer, config)
        return create_proxy_app(consumer, config, leases)

    return await run(options, app)
