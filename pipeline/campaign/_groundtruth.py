"""Ground truth of invariant I1: how many attempts the probe made for each logical request.

The caller sends a fresh W3C trace id per logical request in ``traceparent``; the probe
continues that trace, so every attempt it sends carries the same trace id.
:class:`AttemptCounter` is the transport *under* the probe (``ProbeTransport(...,
transport=counter)``): it counts the requests that reach it per trace id, then sends them
through httpx's own transport. An attempt the circuit breaker refuses never reaches it; the
probe then emits that attempt's event and raises :class:`CircuitOpenError` (a refused
attempt is never retried, so it is always the last one, and there is at most one):
:func:`attempts_made` adds it.

The count is kept only for trace ids announced with :meth:`AttemptCounter.expect` and
removed by :meth:`AttemptCounter.take`, so the table holds the calls in flight and no more;
it is bounded by ``max_traces`` (past it, a call is not counted: ``overflows``; its record
says ``attempts=-1``).
"""

from __future__ import annotations

from typing import Final

import httpx

from pipeline.probe import CircuitOpenError, classify_exception

__all__ = ["NOT_COUNTED", "AttemptCounter", "attempts_made", "outcome_of", "outcome_of_status"]

NOT_COUNTED: Final = -1
_TRACE_ID: Final = slice(3, 35)  # "00-<32 hex trace id>-<16 hex span id>-<flags>"


class AttemptCounter(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncHTTPTransport(limits=...)`` that counts requests per trace id."""

    def __init__(self, limits: httpx.Limits, *, max_traces: int) -> None:
        if max_traces < 1:
            raise ValueError(f"max_traces must be >= 1, got {max_traces}")
        self._inner = httpx.AsyncHTTPTransport(limits=limits)
        self._send = self._inner.handle_async_request
        self._counts: dict[str, int] = {}
        self.max_traces = max_traces
        self.overflows = 0
        """Calls not counted because ``max_traces`` were already being counted."""
        self.unexpected = 0
        """Requests whose trace id was not announced (or had no valid ``traceparent``)."""
        self.attempts = 0
        """Requests that reached this transport, in all."""

    def expect(self, trace_id: str) -> None:
        """Start counting the attempts of ``trace_id``."""
        counts = self._counts
        if len(counts) >= self.max_traces:
            self.overflows += 1
            return
        counts[trace_id] = 0

    def take(self, trace_id: str) -> int:
        """The attempts seen for ``trace_id`` (:data:`NOT_COUNTED` if it was not counted);
        stops counting it."""
        return self._counts.pop(trace_id, NOT_COUNTED)

    @property
    def tracked(self) -> int:
        return len(self._counts)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        header = request.headers.get("traceparent")
        counts = self._counts
        trace_id = header[_TRACE_ID] if header is not None else ""
        seen = counts.get(trace_id)
        if seen is None:
            self.unexpected += 1
        else:
            counts[trace_id] = seen + 1
        return await self._send(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def attempts_made(counted: int, error: BaseException | None) -> int:
    """Attempts of one logical request: those that reached the counter, plus the one the
    breaker refused when the call ended in :class:`CircuitOpenError`."""
    if counted == NOT_COUNTED:
        return NOT_COUNTED
    return counted + (1 if isinstance(error, CircuitOpenError) else 0)


def outcome_of_status(status: int) -> str:
    return "ok" if status < 400 else "http_error"


def outcome_of(error: BaseException) -> str:
    """A :class:`~pipeline.campaign.raw.CallRecord` outcome for a call that raised ``error``:
    the probe's own classification (``timeout``, ``connect_error``, ``transport_error``,
    ``protocol_error``, ``breaker_open``, ``cancelled``), ``other`` for anything that is not
    an httpx error nor a known socket error."""
    outcome, error_class = classify_exception(error)
    if error_class == "unexpected" and not isinstance(error, httpx.HTTPError):
        return "other"
    return outcome
