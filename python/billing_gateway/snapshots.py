"""Snapshots on disk: written atomically, read back into a Gateway at start-up.

The snapshot file is exactly ``gateway.snapshot(cursor)``. Beside it, ``<name>.meta``
keeps what belongs to the process rather than the table: the creation time of the
stream the cursor counts in (to recognise a recreated stream) and the usage drained
from the gateway but not yet reported. The meta file is written first and names the
snapshot it belongs to by size and CRC-32, keeping the entry of the previous snapshot
too, so a crash between the two writes still pairs every snapshot with its own meta.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import msgspec

from .errors import InvalidSnapshot
from .gateway import Gateway
from .models import UsageRecord

__all__ = ["SavedState", "SnapshotInUse", "SnapshotStore"]

log = logging.getLogger(__name__)


class SnapshotInUse(RuntimeError):
    pass


class _Meta(msgspec.Struct, frozen=True):
    crc32: int
    size: int
    stream_created: datetime | None = None
    unsent_usage: list[UsageRecord] = []


_meta_decoder = msgspec.json.Decoder(list[_Meta])


@dataclass(frozen=True)
class SavedState:
    """A gateway restored from disk, with what was saved beside it."""

    gateway: Gateway
    stream_created: datetime | None = None
    unsent_usage: list[UsageRecord] = field(default_factory=list)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SnapshotStore:
    """One snapshot file. ``save`` writes a temporary file, fsyncs it, renames it over
    the old one and fsyncs the directory, so a crash at any moment leaves either the
    previous snapshot or the new one, never a torn file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.meta_path = self.path.with_name(self.path.name + ".meta")
        self._last_meta: _Meta | None = None
        self._lock_file: BinaryIO | None = None
        self._taken = itertools.count(1)
        self._written = 0
        self._writing = threading.Lock()

    def lock(self) -> None:
        """Claims the snapshot for this process until it exits; raises
        :class:`SnapshotInUse` when another process holds it (two daemons writing one
        snapshot would each throw away the other's spends)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "a+b")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SnapshotInUse(
                f"the snapshot {self.path} is used by another running daemon; "
                "give this one its own --snapshot"
            ) from None

    def save(
        self,
        gateway: Gateway,
        cursor: int,
        stream_created: datetime | None = None,
        unsent_usage: Sequence[UsageRecord] = (),
    ) -> int:
        """Writes ``gateway.snapshot(cursor)`` and its meta; returns the snapshot's size."""
        return self.prepare(gateway, cursor, stream_created, unsent_usage)()

    def prepare(
        self,
        gateway: Gateway,
        cursor: int,
        stream_created: datetime | None = None,
        unsent_usage: Sequence[UsageRecord] = (),
    ) -> Callable[[], int]:
        """Takes ``gateway.snapshot(cursor)`` now and returns what writes it, on any thread
        (the disk's flushes then stay off the event loop). Writes happen one at a time, and
        one taken before a snapshot already written is dropped (it returns 0): the file
        never goes back in time."""
        data = gateway.snapshot(cursor)
        meta = _Meta(zlib.crc32(data), len(data), stream_created, list(unsent_usage))
        number = next(self._taken)

        def write() -> int:
            with self._writing:
                if number <= self._written:
                    return 0
                entries = [meta] if self._last_meta is None else [meta, self._last_meta]
                _write_atomically(self.meta_path, msgspec.json.encode(entries))
                self._last_meta = meta
                size = self.write(data)
                self._written = number
                return size

        return write

    def write(self, data: bytes) -> int:
        _write_atomically(self.path, data)
        return len(data)

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def load(self) -> Gateway | None:
        """The gateway in the snapshot, or None when there is none.

        A file that is not a snapshot raises :class:`InvalidSnapshot`: starting over
        silently would throw away state, so the caller decides (see ``load_or_new``).
        """
        data = self.read()
        return None if data is None else Gateway.restore(data)

    def load_or_new(self, **gateway_options: object) -> Gateway:
        """The snapshot's gateway; a new one when there is no snapshot, or when the file
        is unreadable, in which case it is kept aside as ``<name>.invalid`` and the
        stream is replayed from its start."""
        return self.load_state(**gateway_options).gateway

    def load_state(self, **gateway_options: object) -> SavedState:
        """Like :meth:`load_or_new`, with the stream identity and unsent usage saved beside."""
        data = self.read()
        try:
            restored = None if data is None else Gateway.restore(data)
        except InvalidSnapshot as exc:
            aside = self.path.with_name(self.path.name + ".invalid")
            os.replace(self.path, aside)
            log.error("snapshot %s is unreadable (%s); moved to %s, replaying", self.path, exc, aside)
            restored = None
        if restored is None or data is None:
            return SavedState(Gateway(**gateway_options))  # type: ignore[arg-type]
        log.info("restored %d tenants from %s at cursor %d", len(restored), self.path, restored.cursor)
        meta = self._meta_for(data)
        if meta is None:
            return SavedState(restored)
        self._last_meta = meta
        if meta.unsent_usage:
            log.info(
                "%d usage records drained before the restart are still to be reported", len(meta.unsent_usage)
            )
        return SavedState(restored, meta.stream_created, list(meta.unsent_usage))

    def _meta_for(self, data: bytes) -> _Meta | None:
        try:
            entries = _meta_decoder.decode(self.meta_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as exc:
            log.error("snapshot meta %s is unreadable (%s); ignoring it", self.meta_path, exc)
            return None
        crc = zlib.crc32(data)
        for entry in entries:
            if (entry.crc32, entry.size) == (crc, len(data)):
                return entry
        log.error("snapshot meta %s does not belong to %s; ignoring it", self.meta_path, self.path)
        return None
