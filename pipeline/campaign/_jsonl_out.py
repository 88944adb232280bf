"""A JSONL file kept open while records stream into it, for the collector's busy writers.

:func:`pipeline.campaign.raw.append_jsonl` opens the file for every record, which is fine once
a second but not for hundreds of WebSocket messages a second. :class:`JsonlOut` holds the
file open and flushes at most every ``flush_every_s`` (a crash loses at most that much; a
torn last line is skipped by :func:`~pipeline.campaign.raw.read_jsonl`).

Two modes: ``append`` (the file grows across runs of the writer: live observation) and
``replace`` (written under ``.NAME.partial`` and renamed into place by :meth:`close`: whole or
not at all, for end-of-run evidence; :meth:`abort` leaves the previous file, if any).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

import msgspec

__all__ = ["JsonlOut"]

_encoder = msgspec.json.Encoder()


class JsonlOut:
    def __init__(
        self,
        path: Path,
        *,
        mode: Literal["append", "replace"] = "append",
        flush_every_s: float = 1.0,
    ) -> None:
        self.path = path
        self.mode = mode
        self.flush_every_s = flush_every_s
        self.written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._target = path if mode == "append" else path.with_name(f".{path.name}.partial")
        self._file: IO[bytes] | None = self._target.open("ab" if mode == "append" else "wb")
        self._flushed_at = time.monotonic()

    def write(self, value: Any) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self._file.write(_encoder.encode(value) + b"\n")
        self.written += 1
        now = time.monotonic()
        if now - self._flushed_at >= self.flush_every_s:
            self._file.flush()
            self._flushed_at = now

    def close(self) -> None:
        """Flush and close; in ``replace`` mode, rename the finished file into place."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if self.mode == "replace":
            self._target.replace(self.path)

    def abort(self) -> None:
        """Close without publishing (``replace`` mode drops the partial file)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if self.mode == "replace":
            self._target.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
