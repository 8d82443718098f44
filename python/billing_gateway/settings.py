"""The one place that reads the environment. Explicit arguments always win over it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir", "env", "env_path"]

PREFIX = "BILLING_GATEWAY_"


def env(name: str, default: str | None = None) -> str | None:
    """``BILLING_GATEWAY_<name>``, or ``default`` when unset or empty."""
    return os.environ.get(PREFIX + name) or default


def env_path(name: str, default: Path) -> Path:
    value = env(name)
    return Path(value) if value else default


def default_data_dir() -> Path:
    """``BILLING_GATEWAY_DATA_DIR``, else ``$XDG_DATA_HOME/billing-gateway`` (by default
    ``~/.local/share/billing-gateway``): one place, whichever folder a command runs from."""
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return env_path("DATA_DIR", Path(xdg) / "billing-gateway")
