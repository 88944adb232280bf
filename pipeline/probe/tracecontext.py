"""W3C trace context (https://www.w3.org/TR/trace-context/) for the probe.

``traceparent`` is parsed strictly: lowercase hex only, exact field lengths, all-zero
``trace-id`` / ``parent-id`` rejected, version ``ff`` rejected. Version ``00`` must be exactly
55 characters; a higher version is parsed per the spec's forward-compatibility rule (the
first four fields, then ``-`` or the end). Anything invalid parses to ``None``: the caller
then starts a new trace, as the spec requires.

Where a request's trace comes from, first match wins:

1. a valid ``traceparent`` header already on the outgoing request;
2. the ambient context set by :func:`trace_context` (a ``contextvars.ContextVar``, so it
   follows asyncio tasks and is per-thread for threads);
3. a new trace (random ``trace-id``, sampled).

Each attempt gets a new span id, which is the event's ``request_id`` and the ``parent-id`` of
the ``traceparent`` sent upstream.

Ids come from a dedicated :class:`random.Random` seeded from ``os.urandom`` and reseeded in
forked children: trace ids need to be unique, not unguessable, and ``getrandbits`` is several
times faster than ``os.urandom``. The probe's hot path takes span ids from a pool made in
bulk (:data:`span_id_pool`, emptied in forked children too): one ``getrandbits`` and one
``hex()`` per 256 ids measured ~2.5 us less per request than two ``getrandbits`` and two
big-int formats, whose cost on the caller's path is mostly cache misses, not arithmetic.
"""

from __future__ import annotations

import contextvars
import os
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, NamedTuple

__all__ = [
    "TraceParent",
    "current_trace",
    "format_traceparent",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "trace_context",
]

_HEX_LC: Final = frozenset("0123456789abcdef")
# version-traceid-parentid-flags, then (versions above 00 only) "-" and anything.
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
SAMPLED: Final = 0x01


class TraceParent(NamedTuple):
    """One parsed ``traceparent``."""

    trace_id: str
    """32 lowercase hex characters, not all zero."""
    parent_id: str
    """16 lowercase hex characters, not all zero (the caller's span)."""
    flags: int
    """trace-flags, 0..255; bit 0 is ``sampled``."""
    version: int = 0
    """The version we parsed; we always *send* version 00."""


def _is_hex(text: str) -> bool:
    return all(ch in _HEX_LC for ch in text)


def _valid_id(text: str, length: int) -> bool:
    return len(text) == length and _is_hex(text) and text != "0" * length


def parse_traceparent(value: str | bytes | None) -> TraceParent | None:
    """Parse a ``traceparent`` header value; ``None`` when absent or invalid."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16), int(version, 16))


def format_traceparent(trace_id: str, span_id: str, flags: int = SAMPLED) -> str:
    """Version-00 ``traceparent`` for a span. Inputs are trusted (our own ids)."""
    return f"00-{trace_id}-{span_id}-{flags & 0xFF:02x}"


_rng = random.Random(os.urandom(32))  # noqa: S311 - ids must be unique, not secret
_getrandbits = _rng.getrandbits

SPAN_IDS_PER_REFILL: Final = 256
span_id_pool: Final[list[str]] = []
"""Span ids made in bulk (16 hex each, never all zero), taken with ``pop()``: one
``getrandbits`` call and one ``hex()`` per 256 ids. Per id, that is a fraction of one
``getrandbits(64)`` and a big-int format, and it keeps the generator's 2.5 KB state out of
the caller's path. ``list.pop`` and ``extend`` are atomic, so threads share it safely."""


_ID_SLICES: Final = tuple(slice(i, i + 16) for i in range(0, 16 * SPAN_IDS_PER_REFILL, 16))


def refill_span_ids() -> None:
    """Add :data:`SPAN_IDS_PER_REFILL` fresh span ids to :data:`span_id_pool`.

    Cut and checked by C loops (``map`` of the slices, ``in``), not per id in Python: the
    refill runs on a caller's request once every ~85 requests.
    """
    text = _getrandbits(64 * SPAN_IDS_PER_REFILL).to_bytes(8 * SPAN_IDS_PER_REFILL, "big").hex()
    fresh = list(map(text.__getitem__, _ID_SLICES))
    if _ZERO_SPAN in fresh:  # one chance in 2**56 per refill; never a valid span id
        fresh = [span for span in fresh if span != _ZERO_SPAN]
    span_id_pool.extend(fresh)


def _after_fork_in_child() -> None:
    """A forked child must not repeat its parent's ids: new seed, no pooled ids."""
    _rng.seed(os.urandom(32))
    span_id_pool.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch
    os.register_at_fork(after_in_child=_after_fork_in_child)


def take_span_id() -> str:
    """One span id from the pool, refilled when empty."""
    while True:
        try:
            return span_id_pool.pop()
        except IndexError:
            refill_span_ids()


def new_trace_id() -> str:
    """32 lowercase hex characters, never all zero: two pooled span ids, each never zero."""
    return take_span_id() + take_span_id()


def new_span_id() -> str:
    """16 lowercase hex characters, never all zero (also used for logical request ids)."""
    return take_span_id()


_current: contextvars.ContextVar[TraceParent | None] = contextvars.ContextVar(
    "egresswatch_trace", default=None
)

# For the probe's hot path, which reads the ambient trace without a function call around it.
ambient_trace: Final = _current


def current_trace() -> TraceParent | None:
    """The ambient trace set by :func:`trace_context`, if any."""
    return _current.get()


@contextmanager
def trace_context(
    trace_id: str | None = None,
    *,
    parent_id: str | None = None,
    traceparent: str | None = None,
    sampled: bool = True,
) -> Iterator[TraceParent]:
    """Make outbound calls inside the block continue one trace.

    A service handling an inbound request passes the inbound ``traceparent`` header
    (``with trace_context(traceparent=request.headers.get("traceparent")):``) or an explicit
    ``trace_id`` (32 hex). Invalid input is not an error: a new trace is started instead, so
    a malformed inbound header never breaks the caller.
    """
    parent = parse_traceparent(traceparent) if traceparent else None
    if parent is None:
        tid = trace_id.lower() if trace_id else ""
        pid = parent_id.lower() if parent_id else ""
        parent = TraceParent(
            tid if _valid_id(tid, 32) else new_trace_id(),
            pid if _valid_id(pid, 16) else new_span_id(),
            SAMPLED if sampled else 0,
        )
    token = _current.set(parent)
    try:
        yield parent
    finally:
        _current.reset(token)
