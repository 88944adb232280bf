"""JSONL objects: one JSON document per line, ``\\n`` after every line, gzip optional.

Each line of an ``events/`` object is one complete probe event as the worker received it
and ``decode_event`` accepted it (``sinks.records.event_record``; ``decode_event`` reads it
back to the same event); each line of an
``alerts/`` object is one alert record as ``tables.alerting.encode_alert`` writes it. Kinds
live under separate key prefixes (``sinks.keys``), so a line needs no type discriminator.

Gzip output is deterministic (``mtime=0``, fixed level): the same lines always give the same
bytes, so an object written again after a crash has the same MD5 and ETag as before.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from typing import Final

from pipeline.schema import ProbeEvent, decode_event

__all__ = [
    "GZIP_LEVEL",
    "decode_jsonl",
    "encode_jsonl",
    "is_gzip",
    "read_events",
]

GZIP_LEVEL: Final = 6
_GZIP_MAGIC: Final = b"\x1f\x8b"


def encode_jsonl(lines: Iterable[bytes], *, compress: bool = False) -> bytes:
    """Join already-encoded JSON documents, one per line. A line may not hold a newline."""
    parts = [*lines, b""]
    body = b"\n".join(parts)  # one copy, in C; then one scan each for the two checks
    if body.count(b"\n") != len(parts) - 1 or b"\r" in body:
        raise ValueError("a JSONL line may not contain a newline")
    if compress:
        return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    return body


def is_gzip(data: bytes) -> bool:
    return data[:2] == _GZIP_MAGIC


def decode_jsonl(data: bytes) -> list[bytes]:
    """The lines of an object written by :func:`encode_jsonl` (gzip detected by its magic).

    Raises ``ValueError`` on a gzip stream that is damaged or cut short, or a last line
    without its newline (an object cut short).
    """
    if is_gzip(data):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"damaged gzip stream: {exc}") from exc
    if not data:
        return []
    if not data.endswith(b"\n"):
        raise ValueError("the last line has no newline: object cut short")
    return data[:-1].split(b"\n")


def read_events(data: bytes) -> list[ProbeEvent]:
    """Decode and validate every event of an ``events/`` object (raises ``InvalidEvent``)."""
    return [decode_event(line) for line in decode_jsonl(data)]
