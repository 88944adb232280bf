"""The probe's settings: one frozen object, built once at start-up and passed to the transport.

Errors in the settings are raised here, at construction (``ValueError``), never on a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from pipeline.probe.breaker import BreakerConfig
from pipeline.probe.nat import DEFAULT_NAT_RULES
from pipeline.probe.retry import RetryConfig
from pipeline.probe.routes import compile_template
from pipeline.schema import SERVICE_RE

__all__ = ["ProbeConfig", "Timeouts"]

_SERVICE: Final = SERVICE_RE  # the event schema's rule for ``service``


@dataclass(frozen=True)
class Timeouts:
    """Per-attempt timeouts in seconds; ``None`` means no limit for that phase.

    ``connect``/``read``/``write``/``pool`` are httpx's own (``httpx.Timeout``) and replace the
    client's for requests through the probe. ``total`` is a deadline the probe enforces on
    the whole attempt, from send to the end of the body: exceeding it raises
    :class:`~pipeline.probe.DeadlineExceeded` (an ``httpx.TimeoutException``) and gives an
    event with ``error_class="total_timeout"``.
    """

    connect: float | None = 5.0
    read: float | None = 5.0
    write: float | None = 5.0
    pool: float | None = 5.0
    total: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "pool", "total"):
            value = getattr(self, name)
            if value is not None and not value > 0.0:
                raise ValueError(f"timeout {name} must be > 0 or None, got {value!r}")

    def as_extension(self) -> dict[str, float | None]:
        """The ``request.extensions["timeout"]`` dict httpcore reads, capped by ``total``."""
        out: dict[str, float | None] = {
            "connect": self.connect,
            "read": self.read,
            "write": self.write,
            "pool": self.pool,
        }
        if self.total is not None:
            for key, value in out.items():
                out[key] = self.total if value is None else min(value, self.total)
        return out


@dataclass(frozen=True)
class ProbeConfig:
    """Everything the probe needs but the sink. Only ``service`` is required.

    ``retry=None`` switches retries off (as does ``RetryConfig(max_attempts=1)``);
    ``breaker=None`` switches the circuit breaker off; ``timeouts=None`` keeps the client's
    own timeouts and enforces no total deadline. ``nat_rules`` map internal CIDRs to public
    pools (see :mod:`pipeline.probe.nat`). ``max_upstreams`` bounds the per-upstream state
    (breakers, route sets). ``phase_timings`` adds connect/TLS/pool-wait timings through
    httpcore's ``trace`` extension, at a CPU cost of the order of 150 us per request.
    """

    service: str
    route_templates: tuple[str, ...] = ()
    nat_rules: tuple[tuple[str, str], ...] = DEFAULT_NAT_RULES
    timeouts: Timeouts | None = None
    retry: RetryConfig | None = field(default_factory=RetryConfig)
    breaker: BreakerConfig | None = field(default_factory=BreakerConfig)
    max_routes_per_upstream: int = 100
    max_upstreams: int = 1024
    phase_timings: bool = False

    def __post_init__(self) -> None:
        if not _SERVICE.fullmatch(self.service):
            raise ValueError(
                f"service must match {_SERVICE.pattern} (the event schema), got {self.service!r}"
            )
        if isinstance(self.route_templates, str):
            raise ValueError("route_templates is a tuple of templates, not one string")
        object.__setattr__(self, "route_templates", tuple(self.route_templates))
        object.__setattr__(self, "nat_rules", tuple(tuple(rule) for rule in self.nat_rules))
        for template in self.route_templates:
            compile_template(template)
        if self.max_routes_per_upstream < 1 or self.max_upstreams < 1:
            raise ValueError("max_routes_per_upstream and max_upstreams must be >= 1")
