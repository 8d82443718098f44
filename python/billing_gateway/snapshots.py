"""Snapshots on disk: written atomically, read back into a Gateway at start-up."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import InvalidSnapshot
from .gateway import Gateway

__all__ = ["SnapshotStore"]

log = logging.getLogger(__name__)


class SnapshotStore:
    """One snapshot file. ``save`` writes a temporary file, fsyncs it, renames it over
    the old one and fsyncs the directory, so a crash at any moment leaves either the
    previous snapshot or the new one, never a torn file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def save(self, gateway: Gateway, cursor: int) -> int:
        """Writes ``gateway.snapshot(cursor)``; returns its size in bytes."""
        return self.write(gateway.snapshot(cursor))

    def write(self, data: bytes) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
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
        try:
            restored = self.load()
        except InvalidSnapshot as exc:
            aside = self.path.with_name(self.path.name + ".invalid")
            os.replace(self.path, aside)
            log.error("snapshot %s is unreadable (%s); moved to %s, replaying", self.path, exc, aside)
            restored = None
        if restored is not None:
            log.info(
                "restored %d tenants from %s at cursor %d",
                len(restored),
                self.path,
                restored.cursor,
            )
            return restored
        return Gateway(**gateway_options)  # type: ignore[arg-type]
