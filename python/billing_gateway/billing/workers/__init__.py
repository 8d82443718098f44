"""The billing service's background work: the outbox dispatcher, the usage ingestion and
the billing-cycle scheduler. Their database work runs on worker threads, so none of them
holds up the event loop the API shares with them."""

from __future__ import annotations

from .cycles import run_cycles
from .dispatcher import Dispatcher, DispatcherStats
from .ingest import UsageIngestor

__all__ = ["Dispatcher", "DispatcherStats", "UsageIngestor", "run_cycles"]
