"""The billing event stream on NATS JetStream: creating it, and publishing to it.

Events go to ``billing.events.<event_type>`` in the stream ``BILLING_EVENTS``, each with
the header ``Nats-Msg-Id: <event_id>``, so the broker drops a republished duplicate
inside its duplicate window (consumers deduplicate beyond it). Messages a consumer
cannot apply are copied to ``billing.dlq.events``, kept by the stream ``BILLING_DLQ``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.api import PubAck, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import NotFoundError

from .events import Event, UnknownEvent, decode_event, encode_event

__all__ = [
    "DLQ_STREAM",
    "DLQ_SUBJECT",
    "EVENTS_STREAM",
    "EVENTS_SUBJECTS",
    "StreamSettings",
    "ensure_dlq_stream",
    "ensure_stream",
    "event_subject",
    "publish_event",
]

log = logging.getLogger(__name__)

EVENTS_STREAM = "BILLING_EVENTS"
EVENTS_SUBJECTS = "billing.events.>"
SUBJECT_PREFIX = "billing.events."
DLQ_STREAM = "BILLING_DLQ"
DLQ_SUBJECT = "billing.dlq.events"


@dataclass(frozen=True)
class StreamSettings:
    """Limits of the event stream. The defaults keep a year of events on disk."""

    duplicate_window_s: float = 120.0
    max_age_s: float = 365 * 86_400.0
    max_msgs: int = -1
    max_bytes: int = -1
    max_msg_size: int = 1024 * 1024


async def ensure_stream(
    js: JetStreamContext,
    name: str = EVENTS_STREAM,
    subjects: str | list[str] = EVENTS_SUBJECTS,
    settings: StreamSettings | None = None,
) -> StreamInfo:
    """Creates the stream (file storage, duplicate window, limits) if it is missing.

    An existing stream is updated to ``settings`` when they are given and differ, and
    otherwise left as it is (a consumer only verifies that the stream is there).
    Idempotent; publishers and consumers both call it.
    """
    s = settings or StreamSettings()
    config = StreamConfig(
        name=name,
        subjects=[subjects] if isinstance(subjects, str) else list(subjects),
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        duplicate_window=s.duplicate_window_s,
        max_age=s.max_age_s,
        max_msgs=s.max_msgs,
        max_bytes=s.max_bytes,
        max_msg_size=s.max_msg_size,
    )
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        log.info("creating stream %s on %s", name, config.subjects)
        return await js.add_stream(config)
    current = info.config
    if settings is not None and (
        current.subjects != config.subjects
        or current.duplicate_window != config.duplicate_window
        or current.max_age != config.max_age
        or current.max_msgs != config.max_msgs
        or current.max_bytes != config.max_bytes
        or current.max_msg_size != config.max_msg_size
    ):
        log.info("updating stream %s to %s", name, config)
        return await js.update_stream(config)
    return info


async def ensure_dlq_stream(js: JetStreamContext) -> StreamInfo:
    """The stream that keeps dead-lettered messages (``billing.dlq.>``)."""
    return await ensure_stream(js, DLQ_STREAM, "billing.dlq.>")


def event_subject(event_type: str) -> str:
    return SUBJECT_PREFIX + event_type


async def publish_event(js: JetStreamContext, event: bytes | Event | UnknownEvent) -> PubAck:
    """Publishes one event to its subject with ``Nats-Msg-Id = event_id``.

    ``PubAck.duplicate`` is true when the broker already had that event id inside its
    duplicate window. Raises :class:`~billing_gateway.InvalidEvent` for a malformed event.
    """
    decoded = decode_event(event) if isinstance(event, bytes) else event
    payload = event if isinstance(event, bytes) else encode_event(event)
    headers = {"Nats-Msg-Id": decoded.event_id}
    return await js.publish(event_subject(decoded.event_type), payload, headers=headers)


def header_value(value: object) -> str:
    """A header value from anything (header values must be single-line text)."""
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return " ".join(text.split())[:1024]
