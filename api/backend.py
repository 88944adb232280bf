"""What the HTTP app needs from a worker: the query layer, health, resilience, metrics.

The worker's runtime (``agents.wiring.Runtime``) implements it; tests pass a fake. The API
never reaches into Faust, Kafka or the sinks other than through this.
"""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client.registry import CollectorRegistry

from tables.query import SummaryView

__all__ = ["Backend"]


class Backend(Protocol):
    @property
    def view(self) -> SummaryView:
        """All workers' window cells (the query layer)."""

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry to expose at ``/metrics``."""

    def readiness(self) -> list[str]:
        """Why this worker is not ready (empty when ready): Kafka, assignment, recovery, sink."""

    def pipeline_stats(self) -> dict[str, Any]:
        """Counters of this worker's pipeline (records, dead letters, cells, alerts, ...)."""

    def resilience_state(self, service: str | None = None) -> dict[str, Any]:
        """Breakers per (service, upstream) as the probes report them, sorted by (service,
        upstream), of ``service`` only if given, plus the pipeline's own protections (sink
        breaker, spool fill). Shape documented in docs/api.md."""
