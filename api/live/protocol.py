"""The ``/v1/ws/events`` protocol: message encoders, the client's filter, client messages.

Server to client, text frames; a frame carries one or more messages, one compact JSON
object per line (``\\n``-separated; JSON never holds a raw newline). Every message has
``type``, ``trace_id`` and ``request_id`` (invariant I2): events and alerts their own,
session messages the session's ``trace_id`` and a fresh ``request_id``::

    {"type": "hello", "protocol": 1, "session": ..., "filter": {...}, "buffer": ...,
     "window": ..., "ping_interval_s": ..., "ping_timeout_s": ...}
    {"type": "event", <every field of a schema-v1 probe event>}
    {"type": "alert", <every field of an alert record v1>}
    {"type": "dropped", "count": N, "total": T}     N missed just before what follows
    {"type": "ping", "id": n}
    {"type": "filter", "filter": {...}}             the filter now in force
    {"type": "error", "code": ..., "message": ...}

Client to server, one JSON object per frame::

    {"type": "filter", "min_severity": "warning", "route": "/orders/*", "service": null}
    {"type": "pong", "id": n}
    {"type": "ack", "count": N}      total data messages received so far (flow control)

The full contract, close codes included: ``docs/live.md``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec

from pipeline.probe.tracecontext import new_span_id, new_trace_id
from pipeline.schema import SEVERITIES, ProbeEvent, Severity, encode_event
from tables.alerting import AlertRecord, encode_alert
from tables.slo import (
    ROLLUP,  # an alert's route for a whole-service rollup: matches every route filter
)

__all__ = [
    "PROTOCOL_VERSION",
    "SEVERITY_RANK",
    "Ack",
    "ClientMessage",
    "FilterRequest",
    "InvalidMessage",
    "LiveFilter",
    "LiveMessage",
    "Pong",
    "alert_message",
    "control",
    "decode_client_message",
    "event_message",
    "new_trace_id",
]

PROTOCOL_VERSION: Final = 1
SEVERITY_RANK: Final[dict[str, int]] = {name: rank for rank, name in enumerate(SEVERITIES)}
ALERT_RANK: Final = -1
"""Alerts pass every ``min_severity`` (they are never noise); service and route still apply."""
MAX_CLIENT_MESSAGE_BYTES: Final = 4096

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """One event or alert, encoded once and shared by every client that gets it."""

    kind: Literal["event", "alert"]
    rank: int
    """Severity rank (info 0 .. critical 3); ``ALERT_RANK`` for alerts."""
    service: str
    route: str
    text: str
    """The message as sent: one JSON object on one line."""
    trace_id: str


def event_message(event: ProbeEvent) -> LiveMessage:
    text = '{"type":"event",' + encode_event(event)[1:].decode()
    return LiveMessage(
        "event", SEVERITY_RANK[event.severity], event.service, event.route, text, event.trace_id
    )


def alert_message(record: AlertRecord) -> LiveMessage:
    text = '{"type":"alert",' + encode_alert(record)[1:].decode()
    return LiveMessage("alert", ALERT_RANK, record.service, record.route, text, record.trace_id)


def control(kind: str, trace_id: str, **fields: Any) -> str:
    """A session message (hello, ping, dropped, filter, error) on one line."""
    body = {"type": kind, "trace_id": trace_id, "request_id": new_span_id(), **fields}
    return _encoder.encode(body).decode()


class InvalidMessage(ValueError):
    """A client message or filter the server cannot use; ``code`` is stable, for clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


_Route = Annotated[str, msgspec.Meta(max_length=256)]
_Service = Annotated[str, msgspec.Meta(max_length=64)]


class FilterRequest(msgspec.Struct, tag="filter", tag_field="type", kw_only=True):
    """Replaces the whole filter: a missing, null or empty field means "any"."""

    min_severity: Severity | None = None
    route: _Route | None = None
    service: _Service | None = None


class Pong(msgspec.Struct, tag="pong", tag_field="type", kw_only=True):
    id: int | None = None


class Ack(msgspec.Struct, tag="ack", tag_field="type", kw_only=True):
    count: Annotated[int, msgspec.Meta(ge=0)]


ClientMessage = FilterRequest | Pong | Ack
_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)


def decode_client_message(data: str | bytes) -> ClientMessage:
    """Decode one client frame. Raises :class:`InvalidMessage`."""
    if len(data) > MAX_CLIENT_MESSAGE_BYTES:
        raise InvalidMessage("too_large", f"messages are limited to {MAX_CLIENT_MESSAGE_BYTES} B")
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        code = "unknown_type" if "`$.type`" in str(exc) else "invalid_message"
        raise InvalidMessage(code, str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidMessage("malformed_json", str(exc)) from exc


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """What one client wants. ``route`` is exact, or a glob when it holds ``*``."""

    min_severity: Severity = "info"
    route: str | None = None
    service: str | None = None

    @classmethod
    def parse(
        cls, *, min_severity: str | None, route: str | None, service: str | None
    ) -> LiveFilter:
        """From loosely typed input (query parameters). Raises :class:`InvalidMessage`."""
        request = {"type": "filter", "min_severity": min_severity or None}
        request.update(route=route, service=service)
        try:
            return cls.of(msgspec.convert(request, FilterRequest))
        except msgspec.ValidationError as exc:
            raise InvalidMessage("invalid_filter", str(exc)) from exc

    @classmethod
    def of(cls, request: FilterRequest) -> LiveFilter:
        return cls(request.min_severity or "info", request.route or None, request.service or None)

    def matches(self, message: LiveMessage) -> bool:
        if message.rank < SEVERITY_RANK[self.min_severity] and message.rank != ALERT_RANK:
            return False
        if self.service is not None and message.service != self.service:
            return False
        route = self.route
        if route is None or message.route == route:
            return True
        if message.kind == "alert" and message.route == ROLLUP:
            return True
        return "*" in route and fnmatch.fnmatchcase(message.route, route)

    def as_dict(self) -> dict[str, str | None]:
        return {"min_severity": self.min_severity, "route": self.route, "service": self.service}
