"""Upstream health as the probes report it: breaker state, failure and slow-call rates.

Each window cell carries one small :class:`UpstreamHealth` per upstream its events called
(bounded: ``MAX_UPSTREAMS_PER_CELL``, the rest folded into ``_overflow``). Since cells reach
every worker through the changelog view, :func:`resilience_state` answers for every
(service, upstream) whichever worker consumed the events.

What an event tells: ``breaker_state`` is the upstream's breaker when the attempt started.
A *transition* is two consecutive attempts (by ``started_at``) that saw different states.
Failures follow the probe breaker's own rule (5xx, timeouts, connect, transport and protocol
errors; 4xx are successes); a slow call took >= ``SLOW_CALL_MS``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from pipeline.schema import SLOW_ELAPSED_MS, ProbeEvent

__all__ = [
    "MAX_TRANSITIONS",
    "MAX_UPSTREAMS_PER_CELL",
    "OVERFLOW_UPSTREAM",
    "SLOW_CALL_MS",
    "UpstreamHealth",
    "is_failure",
]

MAX_UPSTREAMS_PER_CELL: Final = 16
MAX_TRANSITIONS: Final = 5
OVERFLOW_UPSTREAM: Final = "_overflow"
SLOW_CALL_MS: Final = SLOW_ELAPSED_MS
_FAILURE_OUTCOMES: Final = frozenset(
    {"timeout", "connect_error", "transport_error", "protocol_error"}
)

Transition = tuple[str, str, float]  # (from, to, at)


def is_failure(event: ProbeEvent) -> bool:
    if event.outcome in _FAILURE_OUTCOMES:
        return True
    return event.status_code is not None and event.status_code >= 500


class UpstreamHealth:
    """Counts and breaker observations of one upstream within one cell (or a merge)."""

    __slots__ = (
        "calls",
        "failures",
        "slow",
        "rejected",
        "timeouts",
        "retries",
        "first_at",
        "first_state",
        "last_at",
        "last_state",
        "half_open_since",
        "transitions",
    )

    def __init__(self) -> None:
        self.calls = 0  # attempts that went on the wire
        self.failures = 0
        self.slow = 0
        self.rejected = 0  # attempts refused by an open breaker
        self.timeouts = 0
        self.retries = 0
        self.first_at = 0.0
        self.first_state: str | None = None
        self.last_at = 0.0
        self.last_state: str | None = None
        self.half_open_since: float | None = None  # start of the current half-open stretch
        self.transitions: list[Transition] = []  # oldest first, at most MAX_TRANSITIONS

    def add(self, event: ProbeEvent) -> None:
        if event.outcome == "breaker_open":
            self.rejected += 1
        else:
            self.calls += 1
            if is_failure(event):
                self.failures += 1
            if event.elapsed_ms >= SLOW_CALL_MS:
                self.slow += 1
        if event.outcome == "timeout":
            self.timeouts += 1
        if event.attempt > 1:
            self.retries += 1
        state = event.breaker_state
        if state is not None:
            self._observe(event.started_at, state)

    def _observe(self, at: float, state: str) -> None:
        if self.first_state is None or at < self.first_at:
            self.first_at, self.first_state = at, state
        if self.last_state is None:
            self.last_at, self.last_state = at, state
            self.half_open_since = at if state == "half_open" else None
            return
        if at < self.last_at:
            return  # an older observation cannot change the current state
        if state != self.last_state:
            self._note((self.last_state, state, at))
            self.half_open_since = at if state == "half_open" else None
        self.last_at, self.last_state = at, state

    def _note(self, transition: Transition) -> None:
        self.transitions.append(transition)
        if len(self.transitions) > MAX_TRANSITIONS:
            del self.transitions[0]

    @classmethod
    def merge_all(cls, parts: Iterable[UpstreamHealth]) -> UpstreamHealth:
        """Merge observations of disjoint event sets (cells), stitching them in time order."""
        out = cls()
        ordered = sorted(
            (p for p in parts), key=lambda p: p.first_at if p.first_state else float("inf")
        )
        transitions: list[Transition] = []
        for p in ordered:
            out.calls += p.calls
            out.failures += p.failures
            out.slow += p.slow
            out.rejected += p.rejected
            out.timeouts += p.timeouts
            out.retries += p.retries
            transitions.extend(p.transitions)
            if p.first_state is None or p.last_state is None:
                continue
            if out.last_state is not None and p.first_state != out.last_state:
                transitions.append((out.last_state, p.first_state, p.first_at))
            if out.first_state is None:
                out.first_at, out.first_state = p.first_at, p.first_state
            if out.last_state is None or p.last_at >= out.last_at:
                # A half-open stretch that began before this part carries its start over.
                carried = (
                    out.last_state == "half_open"
                    and p.last_state == "half_open"
                    and p.half_open_since == p.first_at
                )
                out.last_at, out.last_state = p.last_at, p.last_state
                out.half_open_since = out.half_open_since if carried else p.half_open_since
        out.transitions = sorted(set(transitions), key=lambda t: t[2])[-MAX_TRANSITIONS:]
        return out

    def snapshot(self, *, now: float, stuck_after_s: float) -> dict[str, Any]:
        calls = self.calls
        stuck = (
            self.last_state == "half_open"
            and self.half_open_since is not None
            and now - self.half_open_since >= stuck_after_s
        )
        return {
            "breaker_state": self.last_state,
            "state_seen_at": self.last_at if self.last_state else None,
            "calls": calls,
            "failure_rate": self.failures / calls if calls else 0.0,
            "slow_call_rate": self.slow / calls if calls else 0.0,
            "breaker_open_rejections": self.rejected,
            "retries": self.retries,
            "retry_rate": self.retries / (calls + self.rejected) if calls + self.rejected else 0.0,
            "timeouts": self.timeouts,
            "timeout_rate": self.timeouts / calls if calls else 0.0,
            "last_transitions": [
                {"from": a, "to": b, "at": at} for a, b, at in reversed(self.transitions)
            ],
            "stuck_half_open": stuck,
            "half_open_since": self.half_open_since if self.last_state == "half_open" else None,
        }

    def to_data(self) -> list[Any]:
        return [
            self.calls,
            self.failures,
            self.slow,
            self.rejected,
            self.timeouts,
            self.retries,
            self.first_at,
            self.first_state,
            self.last_at,
            self.last_state,
            self.half_open_since,
            [list(t) for t in self.transitions],
        ]

    @classmethod
    def from_data(cls, data: list[Any]) -> UpstreamHealth:
        out = cls()
        (
            out.calls,
            out.failures,
            out.slow,
            out.rejected,
            out.timeouts,
            out.retries,
            out.first_at,
            out.first_state,
            out.last_at,
            out.last_state,
            out.half_open_since,
            transitions,
        ) = data
        for name in ("calls", "failures", "slow", "rejected", "timeouts", "retries"):
            value = getattr(out, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"upstream health {name}: expected a count, got {value!r}")
        for state in (out.first_state, out.last_state):
            if state not in (None, "closed", "open", "half_open"):
                raise ValueError(f"unknown breaker state {state!r}")
        if len(transitions) > MAX_TRANSITIONS:
            raise ValueError("too many breaker transitions")
        out.transitions = [(str(a), str(b), float(at)) for a, b, at in transitions]
        return out
