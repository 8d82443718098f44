"""The per-process budget and routing tables, implemented in Rust; the only module that
imports ``_core``."""

from __future__ import annotations

from ._core import Decision, Gateway, Route, ack_info, validate_event

__all__ = ["Decision", "Gateway", "Route", "ack_info", "validate_event"]
