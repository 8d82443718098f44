"""The one place that reads the environment. Explicit arguments always win over it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["env", "env_path"]

PREFIX = "BILLING_GATEWAY_"


def env(name: str, default: str | None = None) -> str | None:
    """``BILLING_GATEWAY_<name>``, or ``default`` when unset or empty."""
    return os.environ.get(PREFIX + name) or default


def env_path(name: str, default: Path) -> Path:
    value = env(name)
    return Path(value) if value else default
