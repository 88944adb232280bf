"""Structured logging: one JSON object per line, so log shippers need no parser.

Call :func:`configure_json_logging` once at process start (CLI entry points do). Extra
fields go in ``extra={"fields": {...}}``; they are merged into the JSON object.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import msgspec

__all__ = ["JsonFormatter", "configure_json_logging", "log_fields"]

_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """Formats a record as a single JSON line with ts, level, logger, msg and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(payload).decode()


def configure_json_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Route the root logger to one JSON line per record on ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.Formatter.converter = time.gmtime


def log_fields(**fields: Any) -> dict[str, Any]:
    """``logger.warning("...", extra=log_fields(reason=...))``: typed sugar for extra fields."""
    return {"fields": fields}
