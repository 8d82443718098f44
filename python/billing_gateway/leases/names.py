"""The leases' settings that the CLI checks too (without importing ``redis``)."""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "MIN_TTL_S",
    "MODES",
    "checked_key_prefix",
    "checked_lease_ttl",
    "checked_replica_id",
    "parse_lease_ttl",
]

MODES: Final = ("strict", "fast")
MIN_TTL_S: Final = 0.1


def checked_lease_ttl(value: object) -> float:
    """A lease TTL: a finite number (not a bool) of seconds, at least ``MIN_TTL_S``."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < MIN_TTL_S:  # type: ignore[arg-type,operator]
        raise ValueError(f"lease_ttl_s must be a number of seconds >= {MIN_TTL_S}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def parse_lease_ttl(text: str) -> float:
    """``checked_lease_ttl`` of a command-line value."""
    try:
        return checked_lease_ttl(float(text))
    except ValueError:
        raise ValueError(f"expected a number of seconds >= {MIN_TTL_S}, got {text!r}") from None


def checked_key_prefix(value: str) -> str:
    """A Redis key prefix: not empty, no braces (the keys' hash tag is the tenant)."""
    if not value or "{" in value or "}" in value:
        raise ValueError(f"key_prefix must be non-empty without braces, got {value!r}")
    return value


def checked_replica_id(value: str) -> str:
    """A replica id: not empty, no whitespace."""
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"replica_id must be non-empty without whitespace, got {value!r}")
    return value
