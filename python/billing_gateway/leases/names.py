"""The leases' settings that the CLI checks too (without importing ``redis``)."""

from __future__ import annotations

from typing import Final

__all__ = ["MODES", "checked_key_prefix", "checked_replica_id"]

MODES: Final = ("strict", "fast")


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
