"""Attempts that are also their response's body: count bytes, end the attempt with the body.

``got_response`` puts the attempt itself in place of ``response.stream`` (one object per
attempt, not two). An attempt ends at EOF (``body_complete=True``), on close before EOF, on
an error or a cancellation while reading (``body_complete=False``, partial
``bytes_received``), or, when the caller drops the response without closing it, when the
garbage collector reclaims it. httpx's response and its bound stream form a reference
cycle, so that is the cyclic collector's next pass, not the moment of the last ``del``.
``__del__`` then only queues the attempt (no lock, no I/O: a finalizer can run anywhere);
the queue is drained on the event loop right after (async) or on the transport's next
request, ``stats()`` or close (sync). The event's elapsed time runs to the last byte read
before the response was dropped.

When the inner transport is httpx's own (``HTTPTransport``/``AsyncHTTPTransport``), its
response body is httpx's thin wrapper of httpcore's stream, which only turns httpcore's
exceptions into httpx's. The attempt then takes that wrapper's place rather than wrapping
it (one layer per chunk, not two) and turns the exceptions itself, with httpx's own
mapping, so the caller sees exactly what httpx would raise. Any other inner stream is
wrapped as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import httpx

from pipeline.probe._attempt import _Attempt
from pipeline.probe._direct import as_httpx as _as_httpx
from pipeline.probe._errors import DeadlineExceeded

_perf = time.perf_counter


def _orphan(attempt: _Attempt) -> None:
    """From ``__del__``: queue an attempt whose response was dropped before its end."""
    if getattr(attempt, "_inner", None) is not None:  # else it never wrapped a body
        with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
            attempt.core.orphan(attempt)


async def _closed() -> None:
    return None


class _AsyncExhausted:
    """The iterator of a body read to its end, in place of the inner one.

    Letting the inner (generator) iterator go at EOF frees it at once; kept by the attempt,
    it would stay in the response's reference cycle until the cyclic collector's next pass
    (one more object per request for it to find, as httpx's own ``async for`` does not keep).
    """

    __slots__ = ()

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


_ASYNC_EXHAUSTED = _AsyncExhausted()
_EXHAUSTED: Iterator[bytes] = iter(())  # the same for the sync attempt


class _AsyncAttempt(_Attempt, httpx.AsyncByteStream):
    """An attempt of the async transport; after ``got_response``, the response body."""

    __slots__ = ()  # the deadline is a loop.time() value
    asynchronous = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._iter = self._inner.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        iterator = self._iter
        if iterator is None:
            iterator = self._iter = self._inner.__aiter__()
        deadline = self._deadline
        chunk: bytes
        try:
            if deadline is None:
                chunk = await iterator.__anext__()
            else:
                async with asyncio.timeout_at(deadline):
                    chunk = await iterator.__anext__()
        except StopAsyncIteration:
            self._iter = _ASYNC_EXHAUSTED
            self.finish(None, None)
            raise
        except TimeoutError as exc:
            if deadline is None:  # not ours: a foreign inner transport's
                self.finish_exc(exc, body_complete=False)
                raise
            self.finish("timeout", "total_timeout", body_complete=False)
            raise DeadlineExceeded(self.core.total_s or 0.0, request=self.request) from exc
        except Exception as exc:
            if not self._raw:
                self.finish_exc(exc, body_complete=False)
                raise
            mapped = _as_httpx(exc)
            self.finish_exc(mapped, body_complete=False)
            raise mapped  # noqa: B904 - its cause is exc already, as httpx sets it
        except BaseException as exc:
            self.finish_exc(exc, body_complete=False)
            raise
        self.received += len(chunk)
        self.t_last = _perf()
        return chunk

    def aclose(self) -> Coroutine[Any, Any, None]:
        # Not a coroutine function itself: it hands back the inner stream's close, one
        # coroutine per response instead of two. Callers await it as before.
        if not self.done:
            self.finish(None, None, body_complete=False)
        inner = self._inner
        if self._raw and not hasattr(inner, "aclose"):  # as httpx's wrapper does
            return _closed()
        close: Coroutine[Any, Any, None] = inner.aclose()
        return close

    def __del__(self) -> None:
        if not getattr(self, "done", True):
            _orphan(self)


class _SyncAttempt(_Attempt, httpx.SyncByteStream):
    """The sync twin of :class:`_AsyncAttempt`; the deadline is checked per chunk."""

    __slots__ = ()  # the deadline is a perf_counter() value

    def __iter__(self) -> Iterator[bytes]:
        self._iter = iter(self._inner)
        return self

    def __next__(self) -> bytes:
        iterator = self._iter
        if iterator is None:
            iterator = self._iter = iter(self._inner)
        chunk: bytes
        try:
            chunk = next(iterator)
        except StopIteration:
            self._iter = _EXHAUSTED
            self.finish(None, None)
            raise
        except Exception as exc:
            if not self._raw:
                self.finish_exc(exc, body_complete=False)
                raise
            mapped = _as_httpx(exc)
            self.finish_exc(mapped, body_complete=False)
            raise mapped  # noqa: B904 - its cause is exc already, as httpx sets it
        except BaseException as exc:
            self.finish_exc(exc, body_complete=False)
            raise
        self.received += len(chunk)
        self.t_last = now = _perf()
        deadline = self._deadline
        if deadline is not None and now > deadline:
            self.finish("timeout", "total_timeout", body_complete=False)
            self.close()
            raise DeadlineExceeded(self.core.total_s or 0.0, request=self.request)
        return chunk

    def close(self) -> None:
        if not self.done:
            self.finish(None, None, body_complete=False)
        inner = self._inner
        if not self._raw or hasattr(inner, "close"):  # as httpx's wrapper does
            inner.close()

    def __del__(self) -> None:
        if not getattr(self, "done", True):
            _orphan(self)
