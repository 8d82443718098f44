"""The per-process budget table, implemented in Rust; the only module that imports ``_core``."""

from __future__ import annotations

from ._core import Decision, Gateway, ack_info, validate_event

__all__ = ["Decision", "Gateway", "ack_info", "validate_event"]
