"""The gateways' dead-letter stream: listing what was dead-lettered, and redriving it.

A consumer copies a message it cannot apply to ``billing.dlq.events`` (stream
``BILLING_DLQ``) with headers saying why. Once the cause is fixed (a gateway upgraded, a
parking limit raised), ``redrive`` publishes each message again to its original subject,
where every gateway applies it (gateways that did apply it answer ``DUPLICATE``), and
removes it from the dead-letter stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from .stream import DLQ_STREAM

__all__ = ["DeadLetter", "UnknownDeadLetter", "list_dead_letters", "redrive"]


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    kind: str
    reason: str
    subject: str
    stream_sequence: str
    data: bytes


async def list_dead_letters(js: JetStreamContext, limit: int = 100) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first."""
    try:
        info = await js.stream_info(DLQ_STREAM)
    except NotFoundError:
        return []
    found: list[DeadLetter] = []
    if info.state.messages == 0:
        return found
    seq = max(1, info.state.first_seq)
    while seq <= info.state.last_seq and len(found) < limit:
        letter = await _get(js, seq)
        if letter is not None:
            found.append(letter)
        seq += 1
    return found


async def _get(js: JetStreamContext, seq: int) -> DeadLetter | None:
    try:
        msg = await js.get_msg(DLQ_STREAM, seq)
    except NotFoundError:
        return None  # deleted (already redriven)
    headers = msg.headers or {}
    return DeadLetter(
        seq=seq,
        kind=headers.get("Billing-Gateway-Dlq-Kind", "?"),
        reason=headers.get("Billing-Gateway-Dlq-Reason", ""),
        subject=headers.get("Billing-Gateway-Original-Subject", ""),
        stream_sequence=headers.get("Billing-Gateway-Stream-Sequence", ""),
        data=msg.data or b"",
    )


class UnknownDeadLetter(LookupError):
    pass


async def redrive(js: JetStreamContext, seqs: Iterable[int] | None) -> int:
    """Publishes the dead letters ``seqs`` (all of them for None) to their original subjects
    and deletes them from the dead-letter stream; returns how many. An unknown sequence
    raises :class:`UnknownDeadLetter` before anything is redriven."""
    if seqs is None:
        letters = await list_dead_letters(js, limit=2**62)
    else:
        letters = []
        for seq in seqs:
            letter = await _get(js, seq)
            if letter is None or not letter.subject:
                raise UnknownDeadLetter(f"no dead letter at sequence {seq} of {DLQ_STREAM}")
            letters.append(letter)
    for letter in letters:
        # A redrive of the same dead letter twice inside the duplicate window is dropped.
        headers = {"Nats-Msg-Id": f"redrive:{DLQ_STREAM}:{letter.seq}"}
        await js.publish(letter.subject, letter.data, headers=headers)
        await js.delete_msg(DLQ_STREAM, letter.seq)
    return len(letters)
