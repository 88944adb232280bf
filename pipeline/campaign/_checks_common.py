"""What every check of the campaign checker shares: the run's raw data, verdicts, ids, quantiles.

:func:`load_raw` reads a run folder's ``raw/`` once into a :class:`RawRun`, remembering which
files were there at all: a missing file is *no evidence* (``unknown``), an empty one is evidence
of nothing seen. :func:`worst` folds verdicts: any ``fail`` fails, else any ``unknown`` is
unknown, else pass; folding nothing gives ``unknown``, never ``pass``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar

import msgspec

from pipeline.campaign.profile import HTTP_FAULTS, NETWORK_FAULTS, TCP_FAULTS, Plan
from pipeline.campaign.raw import (
    AlertSeen,
    CallRecord,
    IncidentRun,
    KafkaEvent,
    KafkaSummary,
    LoadSummary,
    LoadTick,
    RunMeta,
    Sample,
    StoredEvent,
    StoredObject,
    WsClientSummary,
    WsMessage,
    read_jsonl,
)

__all__ = [
    "CALLER_FAULTS",
    "FAIL",
    "FIRST",
    "PASS",
    "UNKNOWN",
    "Band",
    "RawRun",
    "RunFolderError",
    "Verdict",
    "incident_bands",
    "load_raw",
    "quantile",
    "valid_request_id",
    "valid_trace_id",
    "worst",
]

Verdict = Literal["pass", "fail", "unknown"]
PASS: Final = "pass"  # noqa: S105 - a verdict, not a secret
FAIL: Final = "fail"
UNKNOWN: Final = "unknown"
FIRST: Final = 10
"""How many ids of lost, unexpected or duplicated items a verdict names."""

# Incidents that change what the callers see (latency, errors): SLO and I5 windows avoid them.
CALLER_FAULTS: Final = HTTP_FAULTS | TCP_FAULTS | NETWORK_FAULTS

_TRACE_RE: Final = re.compile(r"[0-9a-f]{32}")
_REQUEST_RE: Final = re.compile(r"[0-9a-f]{16}")
T = TypeVar("T")


class RunFolderError(ValueError):
    """A raw file exists but cannot be read as its record type; the message names the file."""


def worst(verdicts: Iterable[str]) -> Verdict:
    """fail if any fail, else unknown if any unknown (or none at all), else pass."""
    seen = set(verdicts)
    if FAIL in seen:
        return FAIL
    if not seen or UNKNOWN in seen or not seen <= {PASS}:
        return UNKNOWN
    return PASS


def valid_trace_id(value: object) -> bool:
    """W3C trace-context: 32 lowercase hex, not all zero."""
    return isinstance(value, str) and bool(_TRACE_RE.fullmatch(value)) and value != "0" * 32


def valid_request_id(value: object) -> bool:
    """W3C span id: 16 lowercase hex, not all zero."""
    return isinstance(value, str) and bool(_REQUEST_RE.fullmatch(value)) and value != "0" * 16


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile (``q`` in 0..1) of unsorted values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


@dataclass(frozen=True)
class Band:
    """An incident's time band in epoch seconds, as it ran (or as planned if it did not)."""

    id: str
    kind: str
    start: float
    end: float
    ran: bool
    route: str | None


@dataclass
class RawRun:
    """Everything a run folder's ``raw/`` holds; ``present`` names the files that exist."""

    raw_dir: Path
    present: set[str]
    meta: RunMeta | None
    plan: Plan | None
    calls: list[CallRecord] = field(default_factory=list)
    ticks: list[LoadTick] = field(default_factory=list)
    load_summary: LoadSummary | None = None
    incidents: list[IncidentRun] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    kafka_events: list[KafkaEvent] = field(default_factory=list)
    kafka_summary: KafkaSummary | None = None
    rgw_listing: list[StoredEvent] = field(default_factory=list)
    rgw_objects: list[StoredObject] = field(default_factory=list)
    rgw_replay: list[StoredEvent] = field(default_factory=list)
    ws: list[WsMessage] = field(default_factory=list)
    ws_clients: list[WsClientSummary] = field(default_factory=list)
    alerts: list[AlertSeen] = field(default_factory=list)

    @property
    def t0(self) -> float | None:
        """Epoch seconds of plan time 0; None when the run never reached its load."""
        if self.meta is None or self.meta.t0 <= 0:
            return None
        return self.meta.t0

    @property
    def ended_at(self) -> float | None:
        """When the run ended: its own record, else the last thing observed."""
        if self.meta is not None and self.meta.ended_at is not None:
            return self.meta.ended_at
        times = [s.t for s in self.samples[-1:]] + [t.t for t in self.ticks[-1:]]
        return max(times) if times else None

    def has(self, name: str) -> bool:
        return name in self.present


def load_raw(raw_dir: Path) -> RawRun:
    """Read every raw file that exists; a torn last line is skipped, other damage raises.

    A zero-byte ``.json`` file counts as missing (no evidence).
    """
    present = {p.name for p in raw_dir.iterdir()} if raw_dir.is_dir() else set()
    if (raw_dir / "latency").is_dir():
        present |= {f"latency/{p.name}" for p in (raw_dir / "latency").iterdir()}
    run = RawRun(
        raw_dir=raw_dir,
        present=present,
        meta=_one(raw_dir, "meta.json", RunMeta),
        plan=_one(raw_dir, "plan.json", Plan),
    )
    run.calls = _many(raw_dir, "calls.jsonl", CallRecord)
    run.ticks = _many(raw_dir, "load.jsonl", LoadTick)
    run.load_summary = _one(raw_dir, "load_summary.json", LoadSummary)
    run.incidents = _many(raw_dir, "incidents.jsonl", IncidentRun)
    run.samples = sorted(_many(raw_dir, "samples.jsonl", Sample), key=lambda s: s.t)
    run.kafka_events = _many(raw_dir, "kafka_events.jsonl", KafkaEvent)
    run.kafka_summary = _one(raw_dir, "kafka_summary.json", KafkaSummary)
    run.rgw_listing = _many(raw_dir, "rgw_listing.jsonl", StoredEvent)
    run.rgw_objects = _many(raw_dir, "rgw_objects.jsonl", StoredObject)
    run.rgw_replay = _many(raw_dir, "rgw_replay.jsonl", StoredEvent)
    run.ws = _many(raw_dir, "ws.jsonl", WsMessage)
    run.ws_clients = _many(raw_dir, "ws_clients.jsonl", WsClientSummary)
    run.alerts = _many(raw_dir, "alerts.jsonl", AlertSeen)
    return run


def incident_bands(run: RawRun) -> list[Band]:
    """Each incident's band: its real start/end when it ran, else the planned times.

    An incident that started but has no end (the run stopped) lasts until the run's end.
    """
    t0 = run.t0
    planned = {i.id: i for i in run.plan.incidents} if run.plan is not None else {}
    bands: list[Band] = []
    recorded = {r.id: r for r in run.incidents}
    for key in [*planned, *(k for k in recorded if k not in planned)]:
        record, plan = recorded.get(key), planned.get(key)
        kind = record.kind if record is not None else plan.kind if plan is not None else "?"
        route = plan.route if plan is not None else record.route if record is not None else None
        ran = record is not None and record.ran
        if record is not None and record.started_at is not None:
            end = record.ended_at or run.ended_at or record.started_at
            bands.append(Band(key, kind, record.started_at, end, ran, route))
        elif t0 is not None and plan is not None:
            bands.append(Band(key, kind, t0 + plan.start_s, t0 + plan.end_s, ran, route))
        elif t0 is not None and record is not None:
            start, end = t0 + record.planned_start_s, t0 + record.planned_end_s
            bands.append(Band(key, kind, start, end, ran, route))
    return bands


def _one(raw_dir: Path, name: str, type_: type[T]) -> T | None:
    path = raw_dir / name
    if not path.exists() or path.stat().st_size == 0:
        return None  # written whole or not at all: zero bytes is no record, not a damaged one
    try:
        return msgspec.json.decode(path.read_bytes(), type=type_)
    except (OSError, msgspec.DecodeError) as exc:
        raise RunFolderError(f"{path}: cannot read it as {type_.__name__}: {exc}") from exc


def _many(raw_dir: Path, name: str, type_: type[T]) -> list[T]:
    path = raw_dir / name
    try:
        return list(read_jsonl(path, type_))
    except (OSError, msgspec.DecodeError) as exc:
        raise RunFolderError(f"{path}: cannot read it as {type_.__name__} lines: {exc}") from exc
