"""Validation at a boundary: decode, check, and on rejection log one JSON line and count it.

The probe builds events through the schema, so its events are valid by construction; this
module guards every place that *receives* events it did not build (the workers, the CLI's
``validate``, replay). A rejection never raises to the caller: it returns ``None``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Protocol

from pipeline.logs import log_fields
from pipeline.schema import InvalidEvent, ProbeEvent, decode_event

__all__ = ["EventValidator", "Rejection"]


class Rejection(Protocol):
    """Anything rejected with a stable reason code: ``InvalidEvent``, ``InvalidEnvelope``."""

    reason: str
    detail: str


_log = logging.getLogger("egresswatch.validation")
_MAX_DETAIL = 300  # a huge invalid field must not make a huge log line


class EventValidator:
    """Validates raw events; counts rejections by reason (a bounded set of reason codes)."""

    def __init__(self, source: str, *, logger: logging.Logger = _log) -> None:
        self._source = source
        self._logger = logger
        self._lock = threading.Lock()
        self._rejected: Counter[str] = Counter()
        self.accepted = 0

    def validate(self, raw: bytes | str) -> ProbeEvent | None:
        try:
            event = decode_event(raw)
        except InvalidEvent as exc:
            self.reject(exc)
            return None
        self.accepted += 1
        return event

    def reject(self, exc: Rejection, **context: object) -> None:
        """Count and log one rejection. ``context`` adds fields such as topic and offset."""
        reason = _bounded_reason(exc.reason)
        with self._lock:
            self._rejected[reason] += 1
        self._logger.warning(
            "event rejected",
            extra=log_fields(
                event="event_rejected",
                source=self._source,
                reason=reason,
                detail=exc.detail[:_MAX_DETAIL],
                **context,
            ),
        )

    def rejected_by_reason(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rejected)


def _bounded_reason(reason: str) -> str:
    # Reason codes embed at most a schema field name; anything else is folded so a hostile
    # input cannot grow the counter's key set.
    return reason if len(reason) <= 64 else "invalid_event"
