"""Sending through the connection pool of httpx's own transport, as that transport does.

``httpx.AsyncHTTPTransport.handle_async_request`` (and its sync twin) builds an httpcore
request, sends it through the transport's ``_pool`` inside ``map_httpcore_exceptions()``, and
wraps the response. That context manager is generator-based: ~0.8 us a request on the way
through, in the caller's path. When the probe's inner transport is exactly httpx's own, the
probe does the same steps itself with a plain ``try``, mapping an exception with httpx's own
function only when there is one: ~1.4 us less a request, measured on a canned pool. The
caller gets the same responses and the same exceptions (tests/pipeline/probe/test_hot_path.py
runs every outcome kind both ways, async and sync). Any other inner transport, a subclass of
httpx's included, is called as it is. Pinned with httpx (``>=0.28,<0.29``); without its
``_pool`` or its exception mapping the probe calls the transport.

The async transport runs these steps inline on its common path (no total deadline): one
coroutine fewer a request than awaiting :class:`AsyncDirect` (~2,300 fewer instructions,
measured with cachegrind); with a deadline it awaits :class:`AsyncDirect`. The sync
transport calls :class:`SyncDirect` (a plain call: nothing to save by inlining it).
"""

from __future__ import annotations

from typing import Any

import httpcore
import httpx

try:  # httpx's exception mapping and response-body wrappers (internals of the pinned httpx)
    from httpx._transports.default import AsyncResponseStream, ResponseStream
    from httpx._transports.default import map_httpcore_exceptions as _map_httpcore
except ImportError:  # pragma: no cover - another httpx: the probe calls its transport instead
    _map_httpcore = None  # type: ignore[assignment]
    AsyncResponseStream = ResponseStream = None  # type: ignore[assignment,misc]

__all__ = [
    "AsyncDirect",
    "AsyncResponseStream",
    "SyncDirect",
    "as_httpx",
    "core_request",
    "direct_pool",
    "httpx_response",
]


def as_httpx(exc: Exception) -> BaseException:
    """The exception httpx raises for ``exc`` from httpcore (``exc`` itself if not httpcore's)."""
    try:
        with _map_httpcore():
            raise exc
    except BaseException as mapped:  # noqa: BLE001 - returned, raised by the caller
        return mapped
    return exc  # pragma: no cover - the block always raises


def direct_pool(transport: object) -> Any | None:
    """The httpcore pool to send through directly, or None to call ``transport`` itself."""
    if _map_httpcore is None:
        return None
    if type(transport) is httpx.AsyncHTTPTransport:
        method = "handle_async_request"
    elif type(transport) is httpx.HTTPTransport:
        method = "handle_request"
    else:
        return None
    pool = getattr(transport, "_pool", None)
    return pool if callable(getattr(pool, method, None)) else None


def core_request(request: httpx.Request) -> httpcore.Request:
    """The httpcore request httpx's transports build for ``request``."""
    url = request.url
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


def httpx_response(sent: httpcore.Response, body: Any) -> httpx.Response:
    """The httpx response httpx's transports make of httpcore's; ``body`` is the transport's
    body wrapper (``AsyncResponseStream`` or ``ResponseStream``)."""
    return httpx.Response(
        status_code=sent.status,
        headers=sent.headers,
        stream=body(sent.stream),
        extensions=sent.extensions,
    )


class AsyncDirect:
    """``AsyncHTTPTransport.handle_async_request`` of one transport's pool."""

    __slots__ = ("pool",)

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)  # as httpx's transport does
        try:
            sent = await self.pool.handle_async_request(core_request(request))
        except Exception as exc:  # noqa: BLE001 - mapped and raised, as httpx does
            raise as_httpx(exc)  # noqa: B904 - its cause is exc already, as httpx sets it
        return httpx_response(sent, AsyncResponseStream)


class SyncDirect:
    """``HTTPTransport.handle_request`` of one transport's pool."""

    __slots__ = ("pool",)

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)  # as httpx's transport does
        try:
            sent = self.pool.handle_request(core_request(request))
        except Exception as exc:  # noqa: BLE001 - mapped and raised, as httpx does
            raise as_httpx(exc)  # noqa: B904 - its cause is exc already, as httpx sets it
        return httpx_response(sent, ResponseStream)
