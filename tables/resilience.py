"""The resilience picture for ``/v1/resilience/state``: one entry per (service, upstream).

Built from the window cells of every worker (the changelog view), over one view (``5m`` by
default) ending at stream time, so it is the same on every worker.
"""

from __future__ import annotations

from typing import Any, Final

from tables.query import SummaryView
from tables.upstreams import UpstreamHealth

__all__ = ["STUCK_HALF_OPEN_S", "resilience_state"]

# A breaker is expected to leave half-open after a few trial calls; one that the probes
# still report half-open this long after entering it is flagged.
STUCK_HALF_OPEN_S: Final = 30.0


def resilience_state(
    view: SummaryView,
    *,
    window: str = "5m",
    stuck_after_s: float = STUCK_HALF_OPEN_S,
    service: str | None = None,
) -> list[dict[str, Any]]:
    """Per (service, upstream): breaker state, rates, transitions, stuck-half-open flag."""
    now = view.stream_time
    if now is None:
        return []
    grouped: dict[tuple[str, str], list[UpstreamHealth]] = {}
    for key in view.keys(service=service):
        key_service = key.split("|", 1)[0]
        for part in view.parts(key, window, end=float(now)):
            for upstream, health in part.upstreams.items():
                grouped.setdefault((key_service, upstream), []).append(health)
    out = []
    for (svc, upstream), parts in sorted(grouped.items()):
        merged = UpstreamHealth.merge_all(parts)
        out.append(
            {
                "service": svc,
                "upstream": upstream,
                "window": window,
                **merged.snapshot(now=float(now), stuck_after_s=stuck_after_s),
            }
        )
    return out
