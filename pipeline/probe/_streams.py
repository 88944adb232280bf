"""Response body wrappers: count bytes and end the attempt when the body ends.

An attempt ends at EOF (``body_complete=True``), on close before EOF, on an error or a
cancellation while reading (``body_complete=False``, partial ``bytes_received``), or, when
the caller drops the response without closing it, when the garbage collector reclaims the
wrapper. httpx's response and its bound stream form a reference cycle, so that is the cyclic
collector's next pass, not the moment of the last ``del``. ``__del__`` then only queues the
attempt (no lock, no I/O: a finalizer can run anywhere); the queue is drained on the event
loop right after (async) or on the transport's next request, ``stats()`` or close (sync).
The event's elapsed time runs to the last byte read before the response was dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import httpx

from pipeline.probe._attempt import _Attempt
from pipeline.probe._errors import DeadlineExceeded

_perf = time.perf_counter


class _AsyncProbeStream(httpx.AsyncByteStream):
    """Response body wrapper: counts bytes, ends the attempt at EOF, close, error or GC."""

    def __init__(
        self, inner: httpx.AsyncByteStream, attempt: _Attempt, deadline: float | None
    ) -> None:
        self._inner = inner
        self._attempt = attempt
        self._deadline = deadline  # loop.time() value
        self._iter: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._iter = self._inner.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        attempt = self._attempt
        iterator = self._iter
        if iterator is None:
            iterator = self._iter = self._inner.__aiter__()
        try:
            if self._deadline is None:
                chunk = await iterator.__anext__()
            else:
                async with asyncio.timeout_at(self._deadline):
                    chunk = await iterator.__anext__()
        except StopAsyncIteration:
            attempt.finish_status(body_complete=True)
            raise
        except TimeoutError as exc:
            if self._deadline is None:  # not ours: a foreign inner transport's
                attempt.finish_exc(exc, body_complete=False)
                raise
            attempt.finish("timeout", "total_timeout", body_complete=False)
            total = attempt.core.total_s or 0.0
            raise DeadlineExceeded(total, request=attempt.logical.request) from exc
        except BaseException as exc:
            attempt.finish_exc(exc, body_complete=False)
            raise
        attempt.received += len(chunk)
        attempt.t_last = _perf()
        return chunk

    async def aclose(self) -> None:
        attempt = self._attempt
        if not attempt.done:
            attempt.finish_status(body_complete=False)
        await self._inner.aclose()

    def __del__(self) -> None:
        attempt = getattr(self, "_attempt", None)
        if attempt is not None and not attempt.done:
            with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
                attempt.core.orphan(attempt)


class _SyncProbeStream(httpx.SyncByteStream):
    """The sync twin of :class:`_AsyncProbeStream`; the deadline is checked per chunk."""

    def __init__(
        self, inner: httpx.SyncByteStream, attempt: _Attempt, deadline: float | None
    ) -> None:
        self._inner = inner
        self._attempt = attempt
        self._deadline = deadline  # perf_counter() value
        self._iter: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        self._iter = iter(self._inner)
        return self

    def __next__(self) -> bytes:
        attempt = self._attempt
        iterator = self._iter
        if iterator is None:
            iterator = self._iter = iter(self._inner)
        try:
            chunk = next(iterator)
        except StopIteration:
            attempt.finish_status(body_complete=True)
            raise
        except BaseException as exc:
            attempt.finish_exc(exc, body_complete=False)
            raise
        attempt.received += len(chunk)
        attempt.t_last = now = _perf()
        if self._deadline is not None and now > self._deadline:
            attempt.finish("timeout", "total_timeout", body_complete=False)
            self._inner.close()
            raise DeadlineExceeded(attempt.core.total_s or 0.0, request=attempt.logical.request)
        return chunk

    def close(self) -> None:
        attempt = self._attempt
        if not attempt.done:
            attempt.finish_status(body_complete=False)
        self._inner.close()

    def __del__(self) -> None:
        attempt = getattr(self, "_attempt", None)
        if attempt is not None and not attempt.done:
            with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
                attempt.core.orphan(attempt)
