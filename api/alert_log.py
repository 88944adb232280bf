"""AlertLog: the alerts a worker can show, firing and recently resolved, in bounded memory.

Alerts are evaluated by the worker that owns a key and published to the alerts topic. Every
worker's live feed (``api.live.KafkaLiveFeed``) reads every partition of that topic, so it
hands each record to :meth:`AlertLog.record`: every worker holds the same picture, and
``GET /v1/alerts`` answers the same on any of them.

One entry per episode (``alert_id``): the latest record of it, and its ``state``, ``firing``
(a FIRING or ``still_firing`` record was last) or ``resolved``. Records may arrive twice
(Kafka delivers at least once; the feed re-reads the topic's recent past after a restart)
and are idempotent:

- a record already seen (same ``request_id``) changes nothing (``duplicates_total``);
- a record older than the entry's (``evaluated_at``), or a firing record for an episode
  already resolved, changes nothing (``stale_total``): an episode never fires again;
- a RESOLVED record without its FIRING one (it fired before the history the feed re-read)
  is kept: it still says when and how the episode ended.

Bounds (invariant I3): at most ``capacity`` episodes. A resolved episode is forgotten
``retention_s`` after it resolved (``expired_total``). When a new episode finds the log full,
the least recently updated resolved episode makes room, else the least recently updated
firing one; either way ``dropped_total`` counts it. Firing episodes never expire by age (a
firing alert stays visible until it resolves), only by that overflow.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from tables.alerting import AlertRecord

__all__ = ["DEFAULT_CAPACITY", "DEFAULT_RETENTION_S", "AlertEntry", "AlertLog", "AlertState"]

AlertState = Literal["firing", "resolved"]
DEFAULT_CAPACITY: Final = 1_000
DEFAULT_RETENTION_S: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class AlertEntry:
    """One episode as the log holds it: its latest record and the state that record means."""

    record: AlertRecord
    state: AlertState

    def as_dict(self) -> dict[str, Any]:
        """Every field of the record, plus ``state`` (the shape ``GET /v1/alerts`` serves)."""
        body: dict[str, Any] = msgspec.to_builtins(self.record)
        body["state"] = self.state
        return body


def _state_of(record: AlertRecord) -> AlertState:
    return "resolved" if record.status == "resolved" else "firing"


class AlertLog:
    """Episodes by ``alert_id``, least recently updated first; see the module docstring."""

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not retention_s > 0:
            raise ValueError(f"retention_s must be > 0, got {retention_s}")
        self.capacity = capacity
        self.retention_s = retention_s
        self._clock = clock
        self._entries: OrderedDict[str, AlertEntry] = OrderedDict()
        self.records_total = 0
        """Records offered, whatever became of them."""
        self.duplicates_total = 0
        self.stale_total = 0
        self.expired_total = 0
        self.dropped_total = 0
        """Episodes pushed out because the log was full (the overflow counter)."""

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, record: AlertRecord) -> bool:
        """Take one record from the alerts topic; True when it changed what the log shows."""
        self.records_total += 1
        self._expire()
        state = _state_of(record)
        held = self._entries.get(record.alert_id)
        if held is not None:
            if held.record.request_id == record.request_id:
                self.duplicates_total += 1
                return False
            resolved_already = held.state == "resolved" and state == "firing"
            if resolved_already or record.evaluated_at < held.record.evaluated_at:
                self.stale_total += 1
                return False
            self._entries[record.alert_id] = AlertEntry(record, state)
            self._entries.move_to_end(record.alert_id)
            return True
        if state == "resolved" and self._expired(record):
            self.expired_total += 1
            return False
        if len(self._entries) >= self.capacity:
            self._drop_one()
        self._entries[record.alert_id] = AlertEntry(record, state)
        return True

    def query(
        self,
        *,
        service: str | None = None,
        route: str | None = None,
        rule: str | None = None,
        state: AlertState | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[AlertEntry]:
        """The matching episodes, firing first, then the most recently fired first.

        ``since``/``until`` (epoch s) keep the episodes active at some time in
        ``[since, until)``: fired before ``until``, and still firing or resolved at or after
        ``since``; an empty interval holds none. The other filters are exact matches.
        """
        self._expire()
        if since is not None and until is not None and since >= until:
            return []
        found = []
        for entry in self._entries.values():
            record = entry.record
            if service is not None and record.service != service:
                continue
            if route is not None and record.route != route:
                continue
            if rule is not None and record.rule != rule:
                continue
            if state is not None and entry.state != state:
                continue
            if until is not None and record.fired_at >= until:
                continue
            ended = record.resolved_at if entry.state == "resolved" else None
            if since is not None and ended is not None and ended < since:
                continue
            found.append(entry)
        found.sort(key=lambda e: (e.state != "firing", -e.record.fired_at, e.record.alert_id))
        return found

    def stats(self) -> dict[str, int]:
        firing = sum(1 for entry in self._entries.values() if entry.state == "firing")
        return {
            "held": len(self._entries),
            "firing": firing,
            "resolved": len(self._entries) - firing,
            "capacity": self.capacity,
            "records_total": self.records_total,
            "duplicates_total": self.duplicates_total,
            "stale_total": self.stale_total,
            "expired_total": self.expired_total,
            "dropped_total": self.dropped_total,
        }

    def _expired(self, record: AlertRecord) -> bool:
        ended = record.resolved_at if record.resolved_at is not None else record.evaluated_at
        return ended < self._clock() - self.retention_s

    def _expire(self) -> None:
        doomed = [
            alert_id
            for alert_id, entry in self._entries.items()
            if entry.state == "resolved" and self._expired(entry.record)
        ]
        for alert_id in doomed:
            del self._entries[alert_id]
        self.expired_total += len(doomed)

    def _drop_one(self) -> None:
        victim = next(
            (alert_id for alert_id, e in self._entries.items() if e.state == "resolved"),
            next(iter(self._entries)),
        )
        del self._entries[victim]
        self.dropped_total += 1
