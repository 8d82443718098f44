"""``billing-gateway billing …``: the reference Billing service's subcommands.

    billing [--db PATH|URL] serve [--http HOST:PORT] [--no-auto-pay] [--cycle-every S]
    billing [--db PATH|URL] dispatch
    billing [--db PATH|URL] keys create --scope SCOPE [--scope SCOPE ...] [--customer ID]
    billing [--db PATH|URL] outbox list [--status dead|pending|published] [--limit N]
    billing [--db PATH|URL] outbox redrive (--all | SEQ ...)
    billing [--db PATH|URL] stripe events [--status pending|processed|ignored|dead] [--limit N]
    billing [--db PATH|URL] stripe retry (--all | EVENT_ID ...)

Every error is one line on standard error with exit code 2: a usage error, a database
that cannot be opened, a port that cannot be listened on, an unknown scope, customer
outbox row or Stripe event, a ``STRIPE_*`` variable that cannot be used. Nothing is
written when a command fails.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from billing_gateway.cliargs import OneLineParser, anywhere, bounded_int, host_port, option, positive_seconds

if TYPE_CHECKING:
    from .store import BillingStore

__all__ = ["add_parser", "run"]

MAX_SEQ = 2**63 - 1


class _ApiScopes:
    """What ``--scope`` accepts: ``billing:*`` and the scopes the API defines, read from
    the API module only when argparse checks a value or prints the help (so that the
    other commands do not import the web framework)."""

    def _all(self) -> tuple[str, ...]:
        from .api import SCOPES

        return ("billing:*", *SCOPES)

    def __contains__(self, scope: object) -> bool:
        return scope in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())


class _Failed(Exception):
    """A problem the user can fix: one line on standard error, exit code 2."""


def add_parser(commands: Any, late: argparse.ArgumentParser) -> None:
    """Adds ``billing`` and its actions to the top-level subparsers ``commands``; ``late``
    carries the top-level options, which the actions also take after their name."""
    billing = commands.add_parser("billing", help="the reference Billing service")
    db_help = "SQLite path or PostgreSQL URL (default DATA_DIR/billing.db)"
    option(billing, "--db", env_name="BILLING_DB", help=db_help)
    late_db = argparse.ArgumentParser(add_help=False, parents=[late])
    late_db.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    actions = billing.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    serve = actions.add_parser(
        "serve", help="API, outbox dispatcher, cycle scheduler and usage ingestion", **anywhere(late_db)
    )
    option(serve, "--http", env_name="BILLING_HTTP", default="127.0.0.1:8088", type=host_port,
           metavar="HOST:PORT", help="where to serve the billing API")  # fmt: skip
    serve.add_argument(
        "--no-auto-pay", action="store_true", help="leave invoices open for POST /invoices/{id}/pay"
    )
    option(serve, "--cycle-every", env_name="CYCLE_EVERY", default=60, type=positive_seconds,
           metavar="SECONDS", help="how often ended billing periods are invoiced")  # fmt: skip
    actions.add_parser("dispatch", help="the outbox dispatcher alone", **anywhere(late_db))

    keys = actions.add_parser("keys", help="API keys")
    keys_actions = keys.add_subparsers(dest="keys_action", required=True, parser_class=OneLineParser)
    create = keys_actions.add_parser("create", help="create a key and print it (once)", **anywhere(late_db))
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=_ApiScopes(),
        metavar="SCOPE",
        help="a scope; repeat for more. One of: %(choices)s (billing:* grants all)",
    )
    create.add_argument("--customer", help="bind the key to this existing customer")

    outbox = actions.add_parser("outbox", help="the outbox: list rows, redrive dead ones")
    outbox_actions = outbox.add_subparsers(dest="outbox_action", required=True, parser_class=OneLineParser)
    listing = outbox_actions.add_parser(
        "list", help="rows, oldest first: seq, event, attempts, last error", **anywhere(late_db)
    )
    listing.add_argument("--status", choices=["dead", "pending", "published"], help="only rows in this state")
    listing.add_argument("--limit", type=bounded_int(1, 1_000_000), default=50, metavar="N")
    redrive = outbox_actions.add_parser(
        "redrive",
        help="dead rows back to pending, attempts reset: --all, or the rows SEQ ...",
        **anywhere(late_db),
    )
    redrive.add_argument("seq", nargs="*", type=bounded_int(1, MAX_SEQ), metavar="SEQ")
    redrive.add_argument("--all", action="store_true", help="every dead row")

    stripe = actions.add_parser("stripe", help="Stripe webhook events: list them, retry dead ones")
    stripe_actions = stripe.add_subparsers(dest="stripe_action", required=True, parser_class=OneLineParser)
    events = stripe_actions.add_parser(
        "events", help="stored events, oldest first: seq, id, type, object, status, attempts, last error",
        **anywhere(late_db),
    )  # fmt: skip
    events.add_argument(
        "--status", choices=["pending", "processed", "ignored", "dead"], help="only events in this state"
    )
    events.add_argument("--limit", type=bounded_int(1, 1_000_000), default=50, metavar="N")
    retry = stripe_actions.add_parser(
        "retry",
        help="dead events back to pending, attempts reset: --all, or EVENT_ID ...",
        **anywhere(late_db),
    )
    retry.add_argument("event_id", nargs="*", type=stripe_event_id, metavar="EVENT_ID")
    retry.add_argument("--all", action="store_true", help="every dead event")


def run(args: argparse.Namespace) -> int:
    """Runs the ``billing`` action that ``args`` names."""
    import sqlalchemy as sa

    if args.db is None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        args.db = str(args.data_dir / "billing.db")
    from .store import BillingError

    try:
        return _run(args)
    except (_Failed, BillingError) as exc:
        return _fail(str(exc))
    except sa.exc.SQLAlchemyError as exc:
        return _fail(f"database {_shown(args.db)}: {_line(getattr(exc, 'orig', None) or exc)}")
    except OSError as exc:
        return _fail(_line(exc))


def _run(args: argparse.Namespace) -> int:
    from .service import ServiceOptions, dispatch, serve

    store = _open(args.db)
    if args.action == "keys":
        key_id, secret = store.create_api_key(args.scope, args.customer)
        print(secret)
        print(f"key {key_id}: store it now, it is not shown again", file=sys.stderr)
        return 0
    if args.action == "outbox":
        return _outbox(store, args)
    if args.action == "stripe":
        return _stripe(store, args)
    store.engine.dispose()  # the service opens its own
    options = ServiceOptions(db=args.db, nats_url=args.nats_url, data_dir=args.data_dir)
    if args.action == "dispatch":
        return dispatch(options)
    host, port = args.http
    _check_listen(host, port)
    from .stripe.runtime import StripeRuntime
    from .stripe.settings import SettingsError

    try:
        stripe = StripeRuntime.from_env()
    except SettingsError as exc:
        raise _Failed(str(exc)) from None
    return serve(
        ServiceOptions(
            db=args.db,
            nats_url=args.nats_url,
            data_dir=args.data_dir,
            host=host,
            port=port,
            auto_pay=not args.no_auto_pay,
            cycle_every_s=args.cycle_every,
            stripe=stripe,
        )
    )


def _outbox(store: BillingStore, args: argparse.Namespace) -> int:
    from . import outbox_admin

    if args.outbox_action == "list":
        rows = outbox_admin.list_rows(store, args.status, args.limit)
        header = ("SEQ", "EVENT_ID", "EVENT_TYPE", "STATUS", "ATTEMPTS", "LAST_ERROR")
        cells = [
            (str(r.seq), r.event_id, r.event_type, r.status, str(r.attempts), _clip(r.last_error))
            for r in rows
        ]
        total = outbox_admin.count_rows(store, args.status)
        return _listing(header, cells, total, f"{args.status or 'outbox'} rows")
    if args.all == bool(args.seq):
        raise _Failed("outbox redrive: give --all or the seq of each row, not both")
    count = outbox_admin.redrive(store, None if args.all else args.seq)
    print(f"redrove {count} {'row' if count == 1 else 'rows'}: pending again, attempts reset")
    return 0


def _stripe(store: BillingStore, args: argparse.Namespace) -> int:
    from .stripe import inbox

    if args.stripe_action == "events":
        rows = inbox.list_rows(store, args.status, args.limit)
        header = ("SEQ", "EVENT_ID", "EVENT_TYPE", "OBJECT", "STATUS", "ATTEMPTS", "LAST_ERROR")
        cells = [
            (
                str(r.seq),
                r.event_id,
                r.event_type,
                r.object_id or "-",
                r.status,
                str(r.attempts),
                _clip(r.last_error),
            )
            for r in rows
        ]
        return _listing(
            header, cells, inbox.count_rows(store, args.status), f"{args.status or 'Stripe'} events"
        )
    if args.all == bool(args.event_id):
        raise _Failed("stripe retry: give --all or the id of each event, not both")
    count = inbox.retry(store, None if args.all else args.event_id)
    print(f"retrying {count} Stripe {'event' if count == 1 else 'events'}: pending again, attempts reset")
    return 0


def _listing(header: tuple[str, ...], cells: Sequence[tuple[str, ...]], total: int, what: str) -> int:
    """A table on standard output; how many of how many on standard error."""
    print(_table(header, cells))
    more = f"; --limit {total} to see them all" if total > len(cells) else ""
    print(f"{len(cells)} of {total} {what}{more}", file=sys.stderr)
    return 0


def stripe_event_id(value: str) -> str:
    """A Stripe event id (``evt_...``): visible ASCII, at most 255 characters."""
    if not 0 < len(value) <= 255 or not all("!" <= c <= "~" for c in value):
        raise argparse.ArgumentTypeError(f"expected a Stripe event id, got {value!r}")
    return value


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _clip(text: str | None, width: int = 100) -> str:
    if not text:
        return "-"
    line = _line(text)
    return line if len(line) <= width else line[: width - 1] + "…"


def _open(db: str) -> BillingStore:
    """The store at ``db``, migrated; a missing SQLite directory is named as such (SQLite
    only says "unable to open database file")."""
    import sqlalchemy as sa

    from .store import BillingStore

    try:
        url = sa.engine.make_url(db if "://" in db else f"sqlite:///{db}")
    except sa.exc.ArgumentError:
        raise _Failed(f"--db {_shown(db)}: not a SQLite path or a database URL") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        directory = Path(url.database).parent
        if not directory.is_dir():
            raise _Failed(f"database {db}: the directory {directory} does not exist")
    return BillingStore.open(db)


def _check_listen(host: str, port: int) -> None:
    """Fails now, in one line, when ``host:port`` cannot be listened on (in use, not an
    address of this machine, privileged), rather than after the service started."""
    try:
        for family, _, _, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            with socket.create_server(address, family=family):  # SO_REUSEADDR, as uvicorn
                pass
    except OSError as exc:
        raise _Failed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _shown(db: str) -> str:
    """``db`` without its password."""
    import sqlalchemy as sa

    if "://" not in db:
        return db
    try:
        return sa.engine.make_url(db).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an unparsable URL)"


def _line(value: object) -> str:
    return " ".join(str(value).split())


def _fail(message: str) -> int:
    print(f"billing-gateway billing: error: {message}", file=sys.stderr)
    return 2
