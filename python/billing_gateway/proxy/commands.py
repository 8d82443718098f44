"""``billing-gateway proxy`` and ``billing-gateway fake-upstream``.

billing-gateway [--nats-url URL] [--data-dir DIR] proxy --config FILE [--http HOST:PORT]
billing-gateway fake-upstream [--http HOST:PORT] [--model NAME] [--tokens N] [--latency-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from billing_gateway.cliargs import anywhere, bounded_int, host_port, option

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("proxy", "fake-upstream")

log = logging.getLogger(__name__)


def add_parsers(commands: Any, late: argparse.ArgumentParser) -> None:
    proxy = commands.add_parser(
        "proxy", help="the OpenAI-compatible LLM proxy (budgets, routing, failover)", **anywhere(late)
    )
    proxy.add_argument("--config", required=True, type=Path, help="the TOML configuration file")
    option(
        proxy,
        "--http",
        env_name="PROXY_HTTP",
        type=host_port,
        metavar="HOST:PORT",
        help="where to listen (overrides the file's listen)",
    )
    fake = commands.add_parser(
        "fake-upstream", help="a fake OpenAI-compatible upstream (demo, tests, benchmarks)"
    )
    fake.add_argument("--http", type=host_port, default=("127.0.0.1", 9000), metavar="HOST:PORT",
                      help="where to listen (default 127.0.0.1:9000)")  # fmt: skip
    fake.add_argument("--model", help="the model name it answers with (default: the request's)")
    fake.add_argument("--tokens", type=bounded_int(0, 1_000_000), default=8,
                      help="output tokens per answer (default 8)")  # fmt: skip
    fake.add_argument("--latency-ms", type=bounded_int(0, 600_000), default=0,
                      help="delay before each answer (default 0)")  # fmt: skip
    fake.add_argument("--chunk-delay-ms", type=bounded_int(0, 60_000), default=0,
                      help="delay between streamed chunks (default 0)")  # fmt: skip


def _proxy(args: argparse.Namespace) -> int:
    import uvloop

    from .config import load_config
    from .server import serve

    config = load_config(args.config)
    if args.http:
        config = replace(config, listen=args.http)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # about twice as fast
        return runner.run(serve(config, data_dir=args.data_dir, nats_url=args.nats_url))


def _fake(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .fake_upstream import FakeSettings, create_fake_app

    settings = FakeSettings(
        model=args.model, tokens=args.tokens, latency_ms=args.latency_ms, chunk_delay_ms=args.chunk_delay_ms
    )
    host, port = args.http
    log.info("fake upstream on http://%s:%d/v1", host, port)
    web.run_app(create_fake_app(settings), host=host, port=port, print=None, access_log=None)
    return 0


def run(args: argparse.Namespace) -> int:
    return _proxy(args) if args.command == "proxy" else _fake(args)
