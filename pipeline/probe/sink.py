"""Where the probe hands its events: the contract between the transport and the emitter."""

from __future__ import annotations

import threading
from typing import Protocol

from pipeline.schema import ProbeEvent

__all__ = ["EventSink", "MemorySink"]


class EventSink(Protocol):
    """Receives terminal probe events.

    Contract: ``submit`` is called on the caller's hot path, from any thread or event loop.
    It must return in microseconds, never block on I/O, and never raise.
    """

    def submit(self, event: ProbeEvent) -> None: ...


class MemorySink:
    """Keeps every event in a list. For tests and for the in-process demo only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[ProbeEvent] = []

    def submit(self, event: ProbeEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[ProbeEvent]:
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
