"""Offline replay of alerts: the alert records the sink stored, from RGW or a folder.

::

    source = ReplaySource.s3(endpoint, access_key, secret_key, bucket="egresswatch")
    result = replay_alerts(source, service="checkout", since=t1, until=t2)  # or service=None
    for record in result.records: ...          # tables.alerting.AlertRecord, validated
    write_alerts_jsonl(result.records, out)    # each line as encode_alert writes it

Contract of :func:`replay_alerts`: exactly the records of ``alerts/`` objects of ``service``
(of every service when ``None``) with ``since <= evaluated_at < until``, one per
``request_id`` (a record stored twice comes out once), sorted by ``evaluated_at`` then
``request_id``. A FIRING and its RESOLVED record are two records of one ``alert_id``.

The sink places alerts by ``evaluated_at`` under
``<prefix>/alerts/service=<S>/date=YYYY-MM-DD/hour=HH/``; the listing is pruned the way
:func:`sinks.replay.replay` prunes events (existing days only, whole days as one folder).
Alert lines are not read with pyarrow (``observed.by_view`` is a map with free keys): each
object is fetched whole and its lines decoded with ``tables.alerting.decode_alert``.

Errors: :class:`~sinks.replay.InvalidRange`, :class:`UnknownAlertService`,
:class:`~sinks.replay.DamagedObject` (bad gzip, bad JSON, an invalid record), and the sink's
``SinkUnavailable`` / ``SinkRejected`` from the source.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import IO, Final

from sinks.jsonl import decode_jsonl
from sinks.keys import escape_service
from sinks.replay import (
    DamagedObject,
    InvalidRange,
    ReplaySource,
    UnknownService,
    _in_threads,
    _seconds,
    stored_keys,
)
from tables.alerting import AlertRecord, InvalidAlert, decode_alert, encode_alert

__all__ = ["AlertReplay", "UnknownAlertService", "replay_alerts", "write_alerts_jsonl"]

DAY: Final = 86_400


class UnknownAlertService(UnknownService):
    """No ``service=<service>`` folder under ``<prefix>/alerts/``: it never had an alert."""

    def __init__(self, service: str, known: list[str], where: str) -> None:
        super().__init__(service, known, where)
        if not known:
            message = f"no service {service!r}: no alerts at all under {where}"
            self.args = (message,)


@dataclass(frozen=True)
class AlertReplay:
    """What :func:`replay_alerts` found."""

    records: tuple[AlertRecord, ...]
    """Deduplicated by ``request_id``, sorted by (evaluated_at, request_id)."""
    objects: tuple[str, ...]
    """The keys that were read."""
    duplicates: int
    """Records of the range dropped because their ``request_id`` was already there."""
    ignored: tuple[str, ...] = ()
    """Keys in the range's folders outside the key convention (not read)."""

    def __len__(self) -> int:
        return len(self.records)


def _read(source: ReplaySource, key: str) -> list[AlertRecord]:
    data = source.read(key)
    try:
        return [decode_alert(line) for line in decode_jsonl(data)]
    except (ValueError, InvalidAlert) as exc:
        raise DamagedObject(key, str(exc)) from exc


def replay_alerts(
    source: ReplaySource,
    *,
    service: str | None,
    since: datetime | float,
    until: datetime | float,
    workers: int = 16,
) -> AlertReplay:
    """The stored alert records of ``service`` (every service if ``None``) with
    ``since <= evaluated_at < until`` (see the module docstring)."""
    start, end = _seconds("since", since), _seconds("until", until)
    if start >= end:
        raise InvalidRange(f"since must be before until: {since} >= {until}")
    known = source.services("alerts")
    if service is not None:
        escape_service(service)  # InvalidKey for an empty name
        if service not in known:
            raise UnknownAlertService(service, known, f"{source}/{source.prefix}/alerts/")
    services = known if service is None else [service]

    keys, ignored = stored_keys(source, "alerts", services, start, end, workers=workers)

    unique: dict[str, AlertRecord] = {}
    seen = 0
    for records in _in_threads(partial(_read, source), keys, workers):
        for record in records:
            if record.service in services and start <= record.evaluated_at < end:
                seen += 1
                unique.setdefault(record.request_id, record)
    ordered = sorted(unique.values(), key=lambda r: (r.evaluated_at, r.request_id))
    return AlertReplay(tuple(ordered), tuple(keys), seen - len(ordered), tuple(ignored))


def write_alerts_jsonl(records: Iterable[AlertRecord], out: IO[bytes]) -> int:
    """One ``encode_alert`` line per record (the stored line, byte for byte); the count."""
    count = 0
    for record in records:
        out.write(encode_alert(record) + b"\n")
        count += 1
    return count
