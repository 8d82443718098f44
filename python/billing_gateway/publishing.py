"""``billing-gateway publish``: events from a file into the stream, one verdict each.

A file is JSON Lines (one event per line), a JSON array of events, or one JSON event
(pretty-printed or not). Events are kept as the exact bytes of the file, so amounts
are never re-encoded. A bad event is rejected with its position and the reason, and
the events after it are still published.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext

from .stream import publish_event

__all__ = ["PublishCounts", "publish_text", "split_events"]


def split_events(text: str) -> Iterator[tuple[str, bytes]]:
    """``(where, event bytes)`` for every event in ``text``: a JSON array, one JSON
    document, or JSON Lines (``where`` is ``line N`` or ``item N``)."""
    data = text.encode("utf-8", "surrogateescape")
    stripped = data.strip()
    if stripped.startswith(b"["):
        try:
            items = msgspec.json.decode(stripped, type=list[msgspec.Raw])
        except (msgspec.DecodeError, RecursionError):
            pass  # not one array: read it as lines
        else:
            for number, item in enumerate(items, 1):
                yield f"item {number}", bytes(item)
            return
    if stripped.startswith(b"{") and b"\n" in stripped:
        try:
            whole = msgspec.json.decode(stripped, type=msgspec.Raw)
        except (msgspec.DecodeError, RecursionError):
            pass  # several documents: JSON Lines
        else:
            yield "document", bytes(whole)
            return
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            yield f"line {number}", line.strip()


@dataclass
class PublishCounts:
    published: int = 0
    duplicates: int = 0
    rejected: int = 0

    def __str__(self) -> str:
        return f"published {self.published}, duplicates {self.duplicates}, rejected {self.rejected}"


async def publish_text(js: JetStreamContext, text: str) -> PublishCounts:
    """Publishes every event of ``text``; rejections are reported on standard error."""
    counts = PublishCounts()
    for where, event in split_events(text):
        try:
            ack = await publish_event(js, event)
        except (ValueError, RecursionError, UnicodeError) as exc:  # InvalidEvent and kin
            counts.rejected += 1
            print(f"{where}: rejected: {exc}"[:2000], file=sys.stderr)
            continue
        counts.duplicates += bool(ack.duplicate)
        counts.published += not ack.duplicate
    return counts
