"""Prometheus figures of the live feed: clients, buffered messages against their bound, drops.

Registered on the worker's registry by the entry point (``pipeline/worker.py``), read at
scrape time from :meth:`LiveHub.stats` and the feed's shed counter:

- ``egresswatch_live_clients``: WebSocket clients connected;
- ``egresswatch_live_buffered_messages``: messages waiting in the clients' buffers;
- ``egresswatch_live_buffer_capacity_messages``: their bound (clients x buffer size): the
  buffered figure never exceeds it (drop-oldest);
- ``egresswatch_live_dropped_messages_total``: messages pushed out of a full client buffer,
  since start (clients that left included); each client is told in a ``dropped`` notice;
- ``egresswatch_live_refused_clients_total``: connections refused at ``max_clients``;
- ``egresswatch_live_shed_events_total``: events the feed skipped for every client because it
  was over its decode budget;
- ``egresswatch_alert_log_episodes`` (label ``state``: firing, resolved) and
  ``egresswatch_alert_log_capacity_episodes``: what the alert log behind ``GET /v1/alerts``
  holds, against its bound;
- ``egresswatch_alert_log_dropped_episodes_total``: episodes pushed out of the full log.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from api.live.feed import KafkaLiveFeed
from api.live.hub import LiveHub

__all__ = ["LiveCollector"]


class LiveCollector:
    def __init__(self, hub: LiveHub, feed: KafkaLiveFeed | None = None) -> None:
        self._hub = hub
        self._feed = feed

    def describe(self) -> list[Metric]:
        return list(self._families(empty=True))

    def collect(self) -> Iterator[Metric]:
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        stats = {} if empty else self._hub.stats()
        clients = int(stats.get("clients", 0))
        gauges = (
            ("egresswatch_live_clients", "WebSocket clients connected", clients),
            (
                "egresswatch_live_buffered_messages",
                "Messages waiting in the live clients' buffers",
                int(stats.get("buffered", 0)),
            ),
            (
                "egresswatch_live_buffer_capacity_messages",
                "Bound of the live clients' buffers (clients x buffer size; drop-oldest)",
                clients * self._hub.buffer_size,
            ),
        )
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(name, doc)
            if not empty:
                gauge.add_metric([], value)
            yield gauge
        counters = (
            (
                "egresswatch_live_dropped_messages",
                "Messages pushed out of a full live client buffer (each client is told)",
                int(stats.get("dropped_total", 0)),
            ),
            (
                "egresswatch_live_refused_clients",
                "Live connections refused at max_clients",
                self._hub.refused_total,
            ),
            (
                "egresswatch_live_shed_events",
                "Events the live feed skipped for every client (over its decode budget)",
                self._feed.shed if self._feed is not None else 0,
            ),
        )
        for name, doc, value in counters:
            counter = CounterMetricFamily(name, doc)
            if not empty:
                counter.add_metric([], value)
            yield counter
        yield from self._alert_log_families(empty=empty)

    def _alert_log_families(self, *, empty: bool) -> Iterator[Metric]:
        log = self._feed.alert_log if self._feed is not None else None
        if log is None:
            return
        stats = {} if empty else log.stats()
        held = GaugeMetricFamily(
            "egresswatch_alert_log_episodes",
            "Alert episodes the worker holds for GET /v1/alerts, by state",
            labels=["state"],
        )
        capacity = GaugeMetricFamily(
            "egresswatch_alert_log_capacity_episodes", "Bound of the alert log (episodes)"
        )
        dropped = CounterMetricFamily(
            "egresswatch_alert_log_dropped_episodes",
            "Alert episodes pushed out of the full alert log",
        )
        if not empty:
            for state in ("firing", "resolved"):
                held.add_metric([state], stats[state])
            capacity.add_metric([], log.capacity)
            dropped.add_metric([], stats["dropped_total"])
        yield from (held, capacity, dropped)
