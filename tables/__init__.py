"""egresswatch tables: windows, latency sketches, table cells and the queries over them.

Pure Python, no Kafka and nothing of HTTP: ``agents/`` feed cells built here into Faust
tables and into a :class:`SummaryView`; ``api/`` reads :class:`WindowStats` from it.
See docs/windows.md.
"""

from tables.aggregate import WindowAggregate, aggregate_events
from tables.query import SummaryView, WindowStats
from tables.sketch import LatencySketch
from tables.windows import (
    BUCKET_S,
    RETENTION_S,
    VIEWS,
    Watermark,
    bucket_start,
    buckets_for_view,
    is_expired,
    is_late,
    view_end_bucket,
)

__all__ = [
    "BUCKET_S",
    "RETENTION_S",
    "VIEWS",
    "LatencySketch",
    "SummaryView",
    "Watermark",
    "WindowAggregate",
    "WindowStats",
    "aggregate_events",
    "bucket_start",
    "buckets_for_view",
    "is_expired",
    "is_late",
    "view_end_bucket",
]
