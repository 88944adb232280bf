"""egresswatch probe: observe every outbound HTTP call of a service (lot S1).

One line in a service::

    import httpx
    from pipeline.probe import ProbeConfig, ProbeTransport

    client = httpx.AsyncClient(transport=ProbeTransport(ProbeConfig(service="checkout"), sink))

``sink`` is any :class:`EventSink` (the Kafka emitter in production, :class:`MemorySink` in
tests). :class:`SyncProbeTransport` is the same for ``httpx.Client``. Importing this package
imports httpx and msgspec only: no Faust, no pyarrow.
"""

from pipeline.probe._errors import CircuitOpenError, DeadlineExceeded, classify_exception
from pipeline.probe.breaker import BreakerConfig
from pipeline.probe.config import ProbeConfig, Timeouts
from pipeline.probe.nat import NatMapping
from pipeline.probe.redaction import redact_headers, redact_url
from pipeline.probe.retry import RetryConfig
from pipeline.probe.routes import RouteTable, normalize_path
from pipeline.probe.sink import EventSink, MemorySink
from pipeline.probe.tracecontext import (
    TraceParent,
    format_traceparent,
    parse_traceparent,
    trace_context,
)
from pipeline.probe.transport import ProbeStats, ProbeTransport, SyncProbeTransport

__all__ = [
    "BreakerConfig",
    "CircuitOpenError",
    "DeadlineExceeded",
    "EventSink",
    "MemorySink",
    "NatMapping",
    "ProbeConfig",
    "ProbeStats",
    "ProbeTransport",
    "RetryConfig",
    "RouteTable",
    "SyncProbeTransport",
    "Timeouts",
    "TraceParent",
    "classify_exception",
    "format_traceparent",
    "normalize_path",
    "parse_traceparent",
    "redact_headers",
    "redact_url",
    "trace_context",
]
