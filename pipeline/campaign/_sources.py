"""What the collector reads each second, one source at a time; every read fails soft.

- :func:`probe_worker`: ``/v1/health/ready`` (ready, owned partitions, pipeline figures) and
  timed GETs of ``/v1/metrics/network?window=1m`` and ``/metrics``;
- :func:`query_prometheus`: named PromQL instant queries, one value each (None: no sample);
- :func:`sink_queues`: the sinks' spool and open batches per worker, through Prometheus;
- :class:`ProcessWatch`: RSS and cumulative CPU of named pids (psutil), pids replaceable.

A source that fails gives None or nothing; none of these raise for a network error, a
timeout, a bad answer or a vanished process.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping
from typing import Any, Final

import httpx
import psutil

__all__ = [
    "DEFAULT_QUERIES",
    "ProcessWatch",
    "metric_values",
    "probe_worker",
    "query_prometheus",
    "sink_queues",
]

DEFAULT_QUERIES: Final[Mapping[str, str]] = {
    "ingest_events_per_s": "sum(rate(egresswatch_outbound_requests_total[15s]))",
    "dead_letters": "sum(egresswatch_dead_letters_total)",
    "late_events": "sum(egresswatch_late_events_total)",
    "dropped_events": "sum(egresswatch_dropped_events_total)",
    "ws_dropped": "sum(egresswatch_live_dropped_messages_total)",
    "ws_shed": "sum(egresswatch_live_shed_events_total)",
    "label_overflow": "sum(egresswatch_label_overflow_total)",
    "metric_series_max": "max(egresswatch_metric_series)",
    "spool_bytes": "sum(egresswatch_sink_spool_bytes)",
    "spool_batches": "sum(egresswatch_sink_spool_batches)",
    "spool_fill_ratio": "max(egresswatch_sink_spool_fill_ratio)",
    "sink_upload_lag_s": "max(egresswatch_sink_upload_lag_seconds)",
    "sink_breaker_state": "max(egresswatch_sink_breaker_state)",
    "sink_backpressure": "max(egresswatch_sink_backpressure)",
    "sink_objects": "sum(egresswatch_sink_objects_total)",
    "sink_put_failures": "sum(egresswatch_sink_put_failures_total)",
    "sink_checksum_mismatches": "sum(egresswatch_sink_checksum_mismatches_total)",
    "api_requests_per_s": "sum(rate(egresswatch_api_requests_total[15s]))",
}
"""Query name -> PromQL over the workers' families (docs/metrics.md, docs/sinks.md, docs/api.md).
``up:<worker>`` of each scrape target is added by :func:`query_prometheus`."""

_SINK_QUEUE_FAMILIES: Final = (
    "egresswatch_sink_spool_bytes",
    "egresswatch_sink_spool_fill_ratio",
    "egresswatch_sink_spool_batches",
    "egresswatch_sink_spool_refusals_total",
    "egresswatch_sink_open_records",
    "egresswatch_sink_stalled_batches",
    "egresswatch_live_buffered_messages",
    "egresswatch_live_buffer_capacity_messages",
    "egresswatch_live_dropped_messages_total",
)
_SAMPLE_LINE = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}\n]*\})? +([^ \n]+)", re.M)


def metric_values(exposition: bytes, names: frozenset[str]) -> dict[str, float]:
    """Unlabelled samples of ``names`` in a Prometheus text exposition (no full parse)."""
    found: dict[str, float] = {}
    for match in _SAMPLE_LINE.finditer(exposition):
        name = match.group(1).decode()
        if name in names and match.group(2) is None:
            with contextlib.suppress(ValueError):
                found[name] = float(match.group(3))
    return found


async def _timed_get(client: httpx.AsyncClient, url: str) -> tuple[httpx.Response | None, float]:
    started = time.perf_counter()
    try:
        response = await client.get(url)
        await response.aread()
    except (httpx.HTTPError, OSError):
        return None, (time.perf_counter() - started) * 1000
    return response, (time.perf_counter() - started) * 1000


async def probe_worker(
    client: httpx.AsyncClient, base_url: str, *, want_windows: bool, want_metrics: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One worker's figures for a sample, and its 1m window items when ``want_windows``.

    ``api_latency_ms`` is the time of ``/v1/metrics/network`` (the API's SLO endpoint),
    ``ready_latency_ms`` and ``metrics_latency_ms`` those of the other two; a request that
    failed leaves its latency out and sets ``<what>_error``.
    """
    figures: dict[str, Any] = {"ready": False}
    ready, ready_ms = await _timed_get(client, f"{base_url}/v1/health/ready")
    if ready is None:
        figures["ready_error"] = True
        return figures, []
    figures["ready_latency_ms"] = round(ready_ms, 3)
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        body = ready.json()
        figures["ready"] = ready.status_code == 200 and body.get("status") == "ready"
        figures.update({k: v for k, v in body.get("pipeline", {}).items() if _number(v)})
    items: list[dict[str, Any]] = []
    network, network_ms = await _timed_get(client, f"{base_url}/v1/metrics/network?window=1m")
    if network is None or network.status_code != 200:
        figures["api_error"] = network.status_code if network is not None else True
    else:
        figures["api_latency_ms"] = round(network_ms, 3)
        if want_windows:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                items = [dict(item) for item in network.json()["items"]]
    if want_metrics:
        metrics, metrics_ms = await _timed_get(client, f"{base_url}/metrics")
        if metrics is None or metrics.status_code != 200:
            figures["metrics_error"] = metrics.status_code if metrics is not None else True
        else:
            figures["metrics_latency_ms"] = round(metrics_ms, 3)
            figures["metrics_bytes"] = len(metrics.content)
    return figures, items


def _number(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


async def _query(client: httpx.AsyncClient, base_url: str, expr: str) -> list[dict[str, Any]]:
    """The result vector of an instant query, or [] on any failure."""
    try:
        response = await client.get(f"{base_url}/api/v1/query", params={"query": expr})
        body = response.json()
        if body.get("status") != "success" or body["data"]["resultType"] != "vector":
            return []
        result: list[dict[str, Any]] = body["data"]["result"]
        return result
    except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError):
        return []


def _value(series: dict[str, Any]) -> float | None:
    try:
        value = float(series["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if value == value else None  # NaN is no sample


async def query_prometheus(
    client: httpx.AsyncClient,
    base_url: str,
    queries: Mapping[str, str],
    instances: Mapping[str, str],
) -> dict[str, float | None]:
    """Each named query's single value (None when empty or failed), plus ``up:<name>`` for
    each worker whose ``host:port`` is in ``instances`` (instance -> worker name)."""
    names = list(queries)
    answers = await asyncio.gather(
        *(_query(client, base_url, queries[n]) for n in names), _query(client, base_url, "up")
    )
    values: dict[str, float | None] = {
        name: _value(result[0]) if len(result) == 1 else None
        for name, result in zip(names, answers[:-1], strict=True)
    }
    up = {s.get("metric", {}).get("instance"): _value(s) for s in answers[-1]}
    for instance, name in instances.items():
        values[f"up:{name}"] = up.get(instance)
    return values


async def sink_queues(
    client: httpx.AsyncClient,
    base_url: str,
    instances: Mapping[str, str],
    spool_cap_bytes: float | None,
) -> dict[str, dict[str, float]]:
    """``spool/<worker>`` (bytes, cap, refusals), ``sink_open/<worker>`` (records in open
    batches, stalled batches) and ``live/<worker>`` (messages buffered for WebSocket clients,
    their bound, drops) from the latest scrape of each worker."""
    expr = '{__name__=~"' + "|".join(_SINK_QUEUE_FAMILIES) + '"}'
    by_worker: dict[str, dict[str, float]] = {}
    for series in await _query(client, base_url, expr):
        labels = series.get("metric", {})
        name = instances.get(labels.get("instance", ""))
        value = _value(series)
        if name is not None and value is not None:
            by_worker.setdefault(name, {})[labels.get("__name__", "")] = value
    queues: dict[str, dict[str, float]] = {}
    for name, got in by_worker.items():
        spool: dict[str, float] = {}
        if (depth := got.get("egresswatch_sink_spool_bytes")) is not None:
            spool["depth"] = depth
            ratio = got.get("egresswatch_sink_spool_fill_ratio") or 0.0
            cap = depth / ratio if ratio > 0 else spool_cap_bytes
            if cap:
                spool["cap"] = cap
        if (batches := got.get("egresswatch_sink_spool_batches")) is not None:
            spool["batches"] = batches
        if (refused := got.get("egresswatch_sink_spool_refusals_total")) is not None:
            spool["drops"] = refused
        if spool:
            queues[f"spool/{name}"] = spool
        if (open_records := got.get("egresswatch_sink_open_records")) is not None:
            queues[f"sink_open/{name}"] = {
                "depth": open_records,
                "stalled": got.get("egresswatch_sink_stalled_batches", 0.0),
            }
        if (buffered := got.get("egresswatch_live_buffered_messages")) is not None:
            live = {"depth": buffered}
            if (cap := got.get("egresswatch_live_buffer_capacity_messages")) is not None:
                live["cap"] = cap
            if (dropped := got.get("egresswatch_live_dropped_messages_total")) is not None:
                live["drops"] = dropped
            queues[f"live/{name}"] = live
    return queues


class ProcessWatch:
    """RSS and cumulative CPU seconds of named processes; ``set(name, pid)`` after a restart."""

    def __init__(
        self, pids: Mapping[str, int] | None = None, *, with_children: frozenset[str] = frozenset()
    ) -> None:
        self.with_children = with_children
        self._procs: dict[str, psutil.Process | None] = {}
        for name, pid in (pids or {}).items():
            self.set(name, pid)

    def set(self, name: str, pid: int | None) -> None:
        """Watch ``pid`` under ``name`` from now on (None: the process is gone)."""
        if pid is None:
            self._procs[name] = None
            return
        try:
            self._procs[name] = psutil.Process(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            self._procs[name] = None

    def read(self) -> dict[str, dict[str, float]]:
        found: dict[str, dict[str, float]] = {}
        for name, proc in self._procs.items():
            if proc is None:
                continue
            try:
                members = [proc]
                if name in self.with_children:
                    members += proc.children(recursive=True)
                rss = cpu = 0.0
                for member in members:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        with member.oneshot():
                            rss += member.memory_info().rss
                            times = member.cpu_times()
                            cpu += times.user + times.system
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                found[name] = {"rss_bytes": rss, "cpu_s": round(cpu, 3)}
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found
