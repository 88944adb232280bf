"""Where the probe hands its events: the contract between the transport and the emitter.

Any object with ``submit(event)`` is a sink. A sink may also take the probe's compact
records (:mod:`pipeline.probe._record`) through ``submit_record(record)`` and build the
events itself, off the caller's thread (the Kafka emitter does, in its background thread;
:class:`MemorySink` does when its events are read). The transport prefers that path, unless
a subclass overrides ``submit`` alone: then the override gets the events, as it expects
(:func:`record_submitter`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from pipeline.probe._record import Record, materialize
from pipeline.schema import ProbeEvent

__all__ = ["EventSink", "MemorySink", "record_submitter"]


class EventSink(Protocol):
    """Receives terminal probe events.

    Contract: ``submit`` is called on the caller's hot path, from any thread or event loop.
    It must return in microseconds, never block on I/O, and never raise. So must
    ``submit_record``, for a sink that has one.
    """

    def submit(self, event: ProbeEvent) -> None: ...


def record_submitter(sink: object) -> Callable[[Record], None] | None:
    """``sink.submit_record`` if the transport should hand ``sink`` records, else None.

    Only when the class that defines ``submit_record`` also defines the ``submit`` in use:
    a subclass that overrides ``submit`` alone wants to see every event through it.
    """
    cls = type(sink)
    for klass in cls.__mro__:
        if "submit_record" in vars(klass):
            if vars(klass).get("submit") is not getattr(cls, "submit", None):
                return None
            submit_record: Callable[[Record], None] = getattr(sink, "submit_record")  # noqa: B009
            return submit_record
    return None


class MemorySink:
    """Keeps every event in a list. For tests and for the in-process demo only.

    Records are kept as they come and turned into events when :attr:`events` is read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[ProbeEvent | Record] = []

    def submit(self, event: ProbeEvent) -> None:
        with self._lock:
            self._events.append(event)

    def submit_record(self, record: Record) -> None:
        with self._lock:
            self._events.append(record)

    @property
    def events(self) -> list[ProbeEvent]:
        with self._lock:
            items = self._events
            for index, item in enumerate(items):
                if type(item) is Record:
                    items[index] = materialize(item)
            return list(items)  # type: ignore[arg-type]  # all events now

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
