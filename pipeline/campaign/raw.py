"""The raw data of a campaign run: what was done and seen, kept so a report can be re-rendered.

A run folder holds ``raw/`` with one file per kind of evidence; the checker
(:mod:`pipeline.campaign.verdicts`) and the report read only these. Every record type is a
``msgspec.Struct``; a ``.jsonl`` file holds one JSON object per line, a ``.json`` file one.

Files (writer in brackets):

- ``meta.json``: :class:`RunMeta` [the runner, at start and again at the end]
- ``plan.json``: the :class:`~pipeline.campaign.profile.Plan` as JSON [the runner]
- ``calls.jsonl``: :class:`CallRecord`, one per logical request [the load generator]
- ``load.jsonl``: :class:`LoadTick`, one per second [the load generator]
- ``load_summary.json``: :class:`LoadSummary` [the load generator, at its end]
- ``latency/<name>.hdr``: HDR histograms (base64 of ``HdrHistogram.encode()``) [the load generator]
- ``incidents.jsonl``: :class:`IncidentRun`, one per scheduled incident [the runner]
- ``samples.jsonl``: :class:`Sample`, one per second [the collector]
- ``kafka_events.jsonl``: :class:`KafkaEvent`, one per probe-topic event [collector, end]
- ``kafka_summary.json``: :class:`KafkaSummary` [collector, end]
- ``rgw_listing.jsonl``: :class:`StoredEvent`, one per event line of an object [collector, end]
- ``rgw_objects.jsonl``: :class:`StoredObject`, one per object [collector, end]
- ``rgw_replay.jsonl``: :class:`StoredEvent` read through ``egresswatch replay`` [collector, end]
- ``ws.jsonl``: :class:`WsMessage`, one per WebSocket message received [the collector]
- ``ws_clients.jsonl``: :class:`WsClientSummary` [collector, end]
- ``alerts.jsonl``: :class:`AlertSeen`, one per alert record on the alerts topic [the collector]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec

__all__ = [
    "AlertSeen",
    "CallRecord",
    "IncidentRun",
    "KafkaEvent",
    "KafkaSummary",
    "LoadSummary",
    "LoadTick",
    "PhaseLoad",
    "RunMeta",
    "Sample",
    "StoredEvent",
    "StoredObject",
    "WsClientSummary",
    "WsMessage",
    "append_jsonl",
    "read_json",
    "read_jsonl",
    "write_json",
    "write_jsonl",
]

T = TypeVar("T")


class RunMeta(msgspec.Struct, kw_only=True):
    """Who ran what, when, and whether the run went to its end."""

    profile: str
    profile_path: str
    profile_sha256: str
    quick: bool
    seed: int
    t0: float
    """Epoch seconds of run time 0 (plan times are relative to it)."""
    started_at: float
    ended_at: float | None = None
    complete: bool = False
    stop_reason: str | None = None
    """Why the run ended early (``interrupted``, an error), None when it ran to its end."""
    provenance: dict[str, Any] = msgspec.field(default_factory=dict)


class CallRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One logical request as the caller saw it: the ground truth of invariant I1."""

    trace_id: str
    """32 hex: the caller sent it in ``traceparent``; every attempt's event must carry it."""
    service: str
    route: str
    """The route template the path was made from."""
    phase: str
    probed: bool
    """False for the A/B baseline calls, which go through a client without the probe."""
    intended_at: float
    """Epoch seconds the arrival was scheduled for: latency counts from here."""
    started_at: float
    latency_ms: float
    """From ``intended_at`` to the end of the call (no coordinated omission)."""
    attempts: int
    """Attempts the probe made (each must give one event), as counted under the probe."""
    outcome: str
    """``ok``, ``http_error``, ``timeout``, ``connect_error``, ``transport_error``,
    ``protocol_error``, ``breaker_open``, ``cancelled`` or ``other``."""
    status: int | None = None
    cardinality_attack: bool = False
    """Called on a never-seen route during a ``cardinality_burst`` incident."""


class LoadTick(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One second of the load generator (what the live display and the plots show)."""

    t: float
    """Epoch seconds at the end of the second."""
    phase: str
    target_rate: float
    started: int
    """Calls started during this second."""
    completed: int
    dropped: int
    """Arrivals due this second that could not start (``max_in_flight`` reached)."""
    in_flight: int
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    retries: int = 0
    breaker_open: int = 0
    pool_waits: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    breakers: dict[str, str] = msgspec.field(default_factory=dict)
    """Upstream -> breaker state (closed, open, half_open), per probe transport merged."""
    emitter: dict[str, int] = msgspec.field(default_factory=dict)
    """Summed over the emitters: queue_depth, submitted, sent_events, dropped_* counters."""
    rss_bytes: int = 0


class PhaseLoad(msgspec.Struct, kw_only=True):
    scheduled: int
    started: int
    dropped_iterations: int
    first_dropped_at: list[float] = msgspec.field(default_factory=list)


class LoadSummary(msgspec.Struct, kw_only=True):
    phases: dict[str, PhaseLoad]
    emitter: dict[str, int]
    """Final emitter counters after close (summed over services)."""
    probe: dict[str, int]
    """Final probe counters (internal_errors, retries, short_circuits, ...), summed."""
    histograms: dict[str, str]
    """Name (``ab-probed``, ``ab-baseline``, ``load``, ...) -> file relative to ``raw/``."""
    complete: bool = True


class IncidentRun(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What became of one scheduled incident."""

    id: str
    kind: str
    planned_start_s: float
    planned_end_s: float
    ran: bool
    reason: str | None = None
    """Why it did not run (or did not end cleanly); None when it ran as planned."""
    started_at: float | None = None
    ended_at: float | None = None
    route: str | None = None
    expect_alerts: list[str] = msgspec.field(default_factory=list)
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    """What the incident did: records injected, pids killed, restart times, ..."""


class Sample(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One second of observation of the running system."""

    t: float
    workers: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Worker name -> ready, owned_partitions, api_latency_ms, and its readiness figures."""
    prometheus: dict[str, float | None] = msgspec.field(default_factory=dict)
    """Query name -> value through the real Prometheus (None: no sample)."""
    processes: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    """Process name -> rss_bytes, cpu_s (cumulative)."""
    queues: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    """Queue name -> depth, cap, drops (cumulative)."""
    windows: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """The workers' ``/v1/metrics/network`` items of the 1m view (when sampled)."""


class KafkaEvent(msgspec.Struct, kw_only=True, omit_defaults=True, array_like=True):
    request_id: str
    trace_id: str
    logical_request_id: str
    attempt: int
    service: str
    route: str
    severity: str
    outcome: str
    started_at: float
    elapsed_ms: float
    partition: int
    offset: int


class KafkaSummary(msgspec.Struct, kw_only=True):
    records: int
    events: int
    invalid_events: int
    invalid_records: int
    dead_letters: int
    dead_letter_reasons: dict[str, int]
    garbage_injected: int = 0
    end_offsets: dict[str, int] = msgspec.field(default_factory=dict)


class StoredEvent(msgspec.Struct, kw_only=True, omit_defaults=True, array_like=True):
    request_id: str
    trace_id: str
    service: str
    severity: str
    key: str = ""
    """The object it was read from (empty for replay, which hides it)."""


class StoredObject(msgspec.Struct, kw_only=True, omit_defaults=True):
    key: str
    size: int
    events: int
    checksum_ok: bool | None
    """ETag == MD5 of the body (None when the ETag is not a plain MD5)."""


class WsMessage(msgspec.Struct, kw_only=True, omit_defaults=True, array_like=True):
    client: str
    type: str
    received_at: float
    trace_id: str | None = None
    request_id: str | None = None
    ended_at: float | None = None
    """For events: started_at + elapsed_ms, so received_at - ended_at is the live delay."""
    count: int | None = None
    """For ``dropped`` notices: how many this client missed."""


class WsClientSummary(msgspec.Struct, kw_only=True):
    client: str
    slow: bool
    received: int
    events: int
    dropped_notified: int
    reconnects: int


class AlertSeen(msgspec.Struct, kw_only=True, omit_defaults=True):
    received_at: float
    record: dict[str, Any]
    """The alert record as the worker published it (docs/alerts.md)."""


_encoder = msgspec.json.Encoder()


def write_json(path: Path, value: Any) -> None:
    """Write whole or not at all (temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(msgspec.json.format(_encoder.encode(value), indent=2) + b"\n")
    partial.replace(path)


def read_json(path: Path, type_: type[T]) -> T:
    return msgspec.json.decode(path.read_bytes(), type=type_)


def write_jsonl(path: Path, values: Iterable[Any]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as out:
        for value in values:
            out.write(_encoder.encode(value) + b"\n")
            count += 1
    partial.replace(path)
    return count


def append_jsonl(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        out.write(_encoder.encode(value) + b"\n")


def read_jsonl(path: Path, type_: type[T]) -> Iterator[T]:
    """Records of a JSONL file; a missing file has none. A torn last line is skipped."""
    if not path.exists():
        return
    decoder = msgspec.json.Decoder(type_)
    with path.open("rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                yield decoder.decode(line)
            except msgspec.DecodeError:
                if line.endswith(b"\n"):
                    raise
                return
