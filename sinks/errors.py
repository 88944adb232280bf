"""The sink's errors: one tree, retry behaviour on the class.

Foreign exceptions (botocore, s3fs, aiohttp, OS errors of a local folder) are mapped onto
this tree once, at the store boundary (:mod:`sinks.stores`); nothing above the stores sees
them. The writer never lets an error lose a record: whatever a store raises, the batch goes
to the spool (or stays in memory, under back-pressure, when the spool is full).

Errors::

    SinkError                  root; ``retriable`` False
      ├── SinkUnavailable      the store did not answer: connection refused, timeout, 5xx,
      │                        SlowDown. retriable
      ├── ChecksumMismatch     the store answered, but the bytes it holds (or was sent) are
      │                        not the bytes we meant: BadDigest, ETag != MD5, a read-back
      │                        that differs. retriable; never acknowledged
      ├── SinkRejected         the store refused for good: credentials, missing bucket,
      │                        a malformed request. not retriable (the batch is spooled)
      │     └── NoSuchObject   ``get`` of a key the store does not hold
      ├── InvalidKey           a key that does not follow the convention (``sinks.keys``);
      │                        also a ValueError
      └── SpoolError           the local spool
            ├── SpoolFull      the spool is at its bound: back-pressure. retriable
            └── SpoolCorrupt   a segment failed its checksum; it is quarantined
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ChecksumMismatch",
    "InvalidKey",
    "NoSuchObject",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "SpoolCorrupt",
    "SpoolError",
    "SpoolFull",
]


class SinkError(Exception):
    """Root of the sink's errors. ``retriable``: may the same call succeed if tried again?"""

    retriable: ClassVar[bool] = False


class SinkUnavailable(SinkError):
    """The store did not answer (connection, timeout, 5xx); the breaker counts it."""

    retriable = True


class ChecksumMismatch(SinkError):
    """The store's checksum of the object is not ours: the PUT is not acknowledged."""

    retriable = True

    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(f"{key}: checksum {actual!r}, expected {expected!r}")
        self.key = key
        self.expected = expected
        self.actual = actual


class SinkRejected(SinkError):
    """The store refused the request for a reason a retry will not fix."""


class NoSuchObject(SinkRejected):
    """``get`` of a key the store does not hold."""


class InvalidKey(SinkError, ValueError):
    """An object key (or a part of one) that does not follow the key convention."""


class SpoolError(SinkError):
    """Root of the local spool's errors."""


class SpoolFull(SpoolError):
    """The spool cannot take the entry without passing its bound: back-pressure."""

    retriable = True

    def __init__(self, needed: int, free: int) -> None:
        super().__init__(f"spool full: entry needs {needed} bytes, {free} free")
        self.needed = needed
        self.free = free


class SpoolCorrupt(SpoolError):
    """A spool segment failed its checks; it was moved to ``quarantine/``."""

    def __init__(self, segment: str, reason: str) -> None:
        super().__init__(f"spool segment {segment} quarantined: {reason}")
        self.segment = segment
        self.reason = reason
