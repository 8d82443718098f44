"""Argument parsing shared by the ``billing-gateway`` commands: value types that name
what is wrong, and a parser whose errors are one line on standard error (exit code 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from .settings import PREFIX, env

__all__ = [
    "LOG_LEVELS",
    "OneLineParser",
    "anywhere",
    "bounded_int",
    "checked",
    "host_port",
    "http_url",
    "log_level",
    "option",
    "positive_seconds",
    "redis_url",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


T = TypeVar("T")


class OneLineParser(argparse.ArgumentParser):
    """Reports a usage error as ``prog: error: message``, one line, exit code 2
    (argparse prints the whole usage first); ``--help`` still shows it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` means 127.0.0.1) with a port in 1..65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port in 1..65535, got {value!r}")
    return host or "127.0.0.1", int(port)


def positive_seconds(value: str) -> float:
    """A finite, positive number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high`` (written in ASCII digits)."""

    def parse(value: str) -> int:
        if not value.isascii() or not value.lstrip("-").isdigit() or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {value!r}")
        return int(value)

    parse.__name__ = "integer"
    return parse


def log_level(value: str) -> str:
    """A logging level name, any case."""
    if value.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.upper()


def http_url(value: str) -> str:
    """An ``http://`` or ``https://`` URL with a host (and a valid port, if any)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not one
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an http(s) URL, got {value!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected an http(s) URL such as http://127.0.0.1:8088, got {value!r}"
        )
    return value


def redis_url(value: str) -> str:
    """A URL the Redis client takes: ``redis://``, ``rediss://`` or ``unix://``."""
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise argparse.ArgumentTypeError(
            f"expected a redis://, rediss:// or unix:// URL such as redis://127.0.0.1:6379, got {value!r}"
        )
    try:
        from redis.asyncio.connection import parse_url
    except ImportError:  # the [daemon] extra is missing: the command says so when it runs
        return value
    try:
        parse_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad Redis URL {value!r}: {exc}") from None
    return value


def checked(check: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a check that raises ``ValueError``: its message is the error."""

    def parse(value: str) -> T:
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def option(
    parser: argparse.ArgumentParser,
    *flags: str,
    env_name: str | None = None,
    default: object = None,
    help: str,
    **kwargs: Any,
) -> None:
    """Adds an option whose help names its default and the ``BILLING_GATEWAY_*`` variable
    it reads; the variable, when set, is the default (explicit arguments still win)."""
    shown = "" if default is None or kwargs.get("action") == "store_true" else f"default {default}"
    variable = f"{PREFIX}{env_name}" if env_name else ""
    details = "; ".join(part for part in (shown, variable) if part)
    value = env(env_name, None if default is None else str(default)) if env_name else default
    if kwargs.get("action") == "store_true" and env_name:
        value = env(env_name, "") not in ("", "0", "false", "no", "off")
    choices = kwargs.get("choices")
    if choices is not None and "type" not in kwargs:
        # argparse checks choices on arguments only: a default from the environment is
        # checked by its type, which argparse applies to string defaults.
        kwargs["type"] = _one_of(tuple(choices))
    parser.add_argument(*flags, default=value, help=f"{help} ({details})" if details else help, **kwargs)


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {value!r} (choose from {', '.join(map(repr, choices))})"
            )
        return value

    parse.__name__ = "choice"
    return parse


def anywhere(*parents: argparse.ArgumentParser) -> dict[str, Any]:
    """``add_parser`` keywords that make the top-level options also work after a
    subcommand (``billing-gateway consume --nats-url URL``)."""
    return {
        "parents": list(parents),
        "epilog": "--nats-url, --data-dir and --log-level work here too (see billing-gateway --help).",
    }
