"""The per-process budget table. Implemented in Rust (``_core``); this module is its only importer."""

from __future__ import annotations

from ._core import Decision, Gateway

__all__ = ["Decision", "Gateway"]
