"""The object key convention: hive-style folders on event time, deterministic file names.

One object holds the records of one kind, one service and one UTC hour of event time, taken
from one Kafka partition, and is named after the offset of the first Kafka record it holds::

    <prefix>/<kind>/service=<service>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first_offset>.jsonl[.gz]

    egresswatch/events/service=checkout/date=2025-03-14/hour=09/egresswatch.probe-events.v1+3+1200.jsonl.gz
    egresswatch/alerts/service=checkout/date=2025-03-14/hour=09/egresswatch.alerts.v1+0+57.jsonl

- ``kind`` is ``events`` (probe events, by ``started_at``) or ``alerts`` (alert records, by
  ``evaluated_at``); the time is UTC.
- ``service`` is percent-encoded: every byte of its UTF-8 form outside ``[A-Za-z0-9._-]``
  becomes ``%XX`` (upper-case hex), so any name is one safe path segment and parses back.
- ``first_offset`` is the offset of the first Kafka record with a line in the object.
  A Kafka record is never split across batches and a batch writes one object per folder,
  so (folder, topic, partition, first_offset) names one object; no index suffix is needed.
  A batch delivered again after a crash starts at the same committed offset and so
  writes the same names again: the object is overwritten, not duplicated (``docs/sinks.md``).

:func:`parse_key` is the exact inverse of :meth:`ObjectKey.render` (a Hypothesis test holds
them to it); :func:`hour_folder` gives the listing prefix of one service and hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from sinks.errors import InvalidKey

__all__ = [
    "END_OF_9999",
    "KINDS",
    "Kind",
    "ObjectKey",
    "check_prefix",
    "escape_service",
    "hour_folder",
    "hour_of",
    "parse_key",
    "unescape_service",
]

Kind = Literal["events", "alerts"]
KINDS: Final[tuple[Kind, ...]] = ("events", "alerts")

_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_PREFIX_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._=-]+")
_ESCAPED_RE: Final = re.compile(r"(?:[A-Za-z0-9._-]|%[0-9A-F]{2})+")
_DATE_RE: Final = re.compile(r"date=(\d{4})-(\d{2})-(\d{2})")
_HOUR_RE: Final = re.compile(r"hour=(\d{2})")
_FILE_RE: Final = re.compile(r"([A-Za-z0-9._-]{1,249})\+(0|[1-9]\d*)\+(0|[1-9]\d*)\.jsonl(\.gz)?")
END_OF_9999: Final = 253_402_300_800  # 10000-01-01T00:00:00Z: dates keep four digits


def escape_service(service: str) -> str:
    """Percent-encode ``service`` into one path segment (see the module docstring)."""
    if not service:
        raise InvalidKey("empty service name")
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in service.encode())


def unescape_service(segment: str) -> str:
    """Inverse of :func:`escape_service`; only its canonical output is accepted."""
    if not _ESCAPED_RE.fullmatch(segment):
        raise InvalidKey(f"not an escaped service name: {segment!r}")
    raw = bytearray()
    i = 0
    while i < len(segment):
        if segment[i] == "%":
            raw.append(int(segment[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(segment[i]))
            i += 1
    try:
        service = raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidKey(f"escaped service is not UTF-8: {segment!r}") from exc
    if escape_service(service) != segment:
        raise InvalidKey(f"not the canonical escape of a service name: {segment!r}")
    return service


def hour_of(at: float) -> int:
    """Start of the UTC hour holding the epoch time ``at``, in epoch seconds."""
    return int(at // 3600) * 3600


def check_prefix(prefix: str) -> None:
    if prefix and not all(
        _PREFIX_SEGMENT_RE.fullmatch(part) and part not in (".", "..") for part in prefix.split("/")
    ):
        raise InvalidKey(f"prefix must be '/'-separated [A-Za-z0-9._=-] segments: {prefix!r}")


def hour_folder(prefix: str, kind: Kind, service: str, hour: int) -> str:
    """``<prefix>/<kind>/service=<s>/date=<d>/hour=<h>/``: the listing prefix of one hour."""
    check_prefix(prefix)
    if kind not in KINDS:
        raise InvalidKey(f"kind must be one of {KINDS}: {kind!r}")
    if hour % 3600 or not 0 <= hour < END_OF_9999:
        raise InvalidKey(f"hour must start an hour of years 1970..9999 in epoch seconds: {hour}")
    moment = datetime.fromtimestamp(hour, UTC)
    head = f"{prefix}/" if prefix else ""
    return (
        f"{head}{kind}/service={escape_service(service)}/date={moment:%Y-%m-%d}/hour={moment:%H}/"
    )


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """The parts of one object key; :meth:`render` gives the key, :func:`parse_key` the parts."""

    kind: Kind
    service: str
    hour: int
    """Start of the UTC hour of event time, epoch seconds (see :func:`hour_of`)."""
    topic: str
    partition: int
    first_offset: int
    """Offset of the first Kafka record with a line in the object."""
    gzip: bool = False
    prefix: str = ""

    def render(self) -> str:
        if not _TOPIC_RE.fullmatch(self.topic):
            raise InvalidKey(f"not a Kafka topic name: {self.topic!r}")
        if self.partition < 0 or self.first_offset < 0:
            raise InvalidKey(f"negative partition or offset: {self.partition}, {self.first_offset}")
        folder = hour_folder(self.prefix, self.kind, self.service, self.hour)
        suffix = ".jsonl.gz" if self.gzip else ".jsonl"
        return f"{folder}{self.topic}+{self.partition}+{self.first_offset}{suffix}"

    def __str__(self) -> str:
        return self.render()


def parse_key(key: str) -> ObjectKey:
    """Parse a key written by :meth:`ObjectKey.render`. Raises :class:`InvalidKey`."""
    parts = key.split("/")
    if len(parts) < 5:
        raise InvalidKey(f"too few segments: {key!r}")
    *head, kind, service_part, date_part, hour_part, name = parts
    if kind not in KINDS:
        raise InvalidKey(f"unknown kind {kind!r} in {key!r}")
    if not service_part.startswith("service="):
        raise InvalidKey(f"expected service=...: {key!r}")
    service = unescape_service(service_part.removeprefix("service="))
    date_match = _DATE_RE.fullmatch(date_part)
    hour_match = _HOUR_RE.fullmatch(hour_part)
    file_match = _FILE_RE.fullmatch(name)
    if not (date_match and hour_match and file_match):
        raise InvalidKey(f"expected date=YYYY-MM-DD/hour=HH/<topic>+<p>+<offset>.jsonl: {key!r}")
    year, month, day = (int(g) for g in date_match.groups())
    try:
        moment = datetime(year, month, day, int(hour_match.group(1)), tzinfo=UTC)
    except ValueError as exc:
        raise InvalidKey(f"no such date or hour in {key!r}") from exc
    parsed = ObjectKey(
        kind=kind,  # checked against KINDS above
        service=service,
        hour=int(moment.timestamp()),
        topic=file_match.group(1),
        partition=int(file_match.group(2)),
        first_offset=int(file_match.group(3)),
        gzip=file_match.group(4) is not None,
        prefix="/".join(head),
    )
    if parsed.render() != key:  # e.g. a year before 1970 or a prefix with '..'
        raise InvalidKey(f"not a canonical key: {key!r}")
    return parsed
