"""What the sink stores: a line of JSON with the three facts that place it in a key.

The writer takes :class:`SinkRecord` values, so it depends on no schema: the worker turns
probe events into records with :func:`event_record` (after :func:`keeps` applied the
severity rule) and alert records with :func:`alert_record`.

What is kept (``docs/sinks.md``, "What is critical"): events whose ``severity`` is at or
above ``min_severity`` (``"critical"`` by default, the rules of
``pipeline.schema.derive_severity``; ``"info"`` keeps every event) and every alert record.
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

from pipeline.schema import SEVERITIES, ProbeEvent, Severity, encode_event
from sinks.keys import Kind

__all__ = [
    "DEFAULT_MIN_SEVERITY",
    "AlertLike",
    "SinkRecord",
    "alert_record",
    "event_record",
    "keeps",
    "severity_rank",
]

DEFAULT_MIN_SEVERITY: Final[Severity] = "critical"
_RANK: Final = {name: rank for rank, name in enumerate(SEVERITIES)}
_encoder = msgspec.json.Encoder()


class SinkRecord(msgspec.Struct, frozen=True, gc=False):
    """One line of one object, and where it belongs (built in C, never tracked by the GC)."""

    kind: Kind
    service: str
    at: float
    """Event time, epoch seconds: it picks the ``date=``/``hour=`` folder."""
    line: bytes
    """One complete JSON document, without a newline."""


class AlertLike(Protocol):
    """What the sink reads of an alert record (``tables.alerting.AlertRecord``)."""

    @property
    def service(self) -> str: ...
    @property
    def evaluated_at(self) -> float: ...


def severity_rank(severity: str) -> int:
    """0 for info .. 3 for critical; ``ValueError`` for anything else."""
    try:
        return _RANK[severity]
    except KeyError:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}") from None


def keeps(event: ProbeEvent, min_severity: Severity = DEFAULT_MIN_SEVERITY) -> bool:
    """Does the sink store ``event``? Its severity is at or above ``min_severity``."""
    return _RANK[event.severity] >= _RANK[min_severity]


def event_record(event: ProbeEvent, received: bytes | None = None) -> SinkRecord:
    """The line is ``received``, the bytes ``event`` was decoded from, when given and on one
    line; else ``encode_event(event)``. Either way ``decode_event(line) == event``.

    Why the received bytes: encoding every critical event again was a third of the sink's
    CPU. They are safe to store as they are: ``decode_event`` checked every field (unknown
    fields are refused, severity re-derived), so only the JSON formatting may differ from
    ``encode_event``'s, and a redelivered record carries the same bytes, so an object
    written again after a crash is still byte for byte the same. JSON allows newlines
    between tokens; such an event is encoded again, as a JSONL line may not hold one.
    """
    if received is None or b"\n" in received or b"\r" in received:
        received = encode_event(event)
    return SinkRecord("events", event.service, event.started_at, received)


def alert_record(alert: AlertLike) -> SinkRecord:
    """The line is the record's compact JSON, byte for byte what ``encode_alert`` writes."""
    return SinkRecord("alerts", alert.service, alert.evaluated_at, _encoder.encode(alert))
