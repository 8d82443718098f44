"""``billing-gateway billing …``: the reference Billing service's subcommands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from billing_gateway.settings import env

__all__ = ["add_parser", "run"]


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def add_parser(commands: Any) -> None:
    """Adds ``billing`` and its actions to the top-level subparsers ``commands``."""
    billing = commands.add_parser("billing", help="the reference Billing service")
    billing.add_argument(
        "--db",
        default=env("BILLING_DB", "billing.db"),
        help="SQLite path or PostgreSQL URL (default ./billing.db)",
    )
    actions = billing.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="API, outbox dispatcher, cycle scheduler and usage ingestion")
    serve.add_argument(
        "--http", type=_host_port, default=env("BILLING_HTTP", "127.0.0.1:8088"), metavar="HOST:PORT"
    )
    serve.add_argument(
        "--no-auto-pay", action="store_true", help="leave invoices open for POST /invoices/{id}/pay"
    )
    serve.add_argument("--cycle-every", type=float, default=60.0, metavar="SECONDS")
    actions.add_parser("dispatch", help="the outbox dispatcher alone")
    keys = actions.add_parser("keys", help="API keys")
    keys_actions = keys.add_subparsers(dest="keys_action", required=True)
    create = keys_actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument(
        "--scope", action="append", required=True, help="a scope; repeat for more; billing:* for all"
    )
    create.add_argument("--customer", help="bind the key to one customer")


def run(args: argparse.Namespace) -> int:
    """Runs the ``billing`` action that ``args`` names."""
    from .service import ServiceOptions, dispatch, serve
    from .store import BillingStore

    if args.action == "keys":
        key_id, secret = BillingStore.open(args.db).create_api_key(args.scope, args.customer)
        print(secret)
        print(f"key {key_id}: store it now, it is not shown again", file=sys.stderr)
        return 0
    options = ServiceOptions(db=args.db, nats_url=args.nats_url, data_dir=args.data_dir)
    if args.action == "dispatch":
        return dispatch(options)
    host, port = args.http if isinstance(args.http, tuple) else _host_port(args.http)
    return serve(
        ServiceOptions(
            db=args.db,
            nats_url=args.nats_url,
            data_dir=args.data_dir,
            host=host,
            port=port,
            auto_pay=not args.no_auto_pay,
            cycle_every_s=args.cycle_every,
        )
    )
