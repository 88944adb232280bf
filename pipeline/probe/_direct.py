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

The httpcore request and the httpx response of that path are built by filling bare
instances with the attributes the constructors would set, without validating again what
httpx and httpcore have validated already: ~3.4 us less a request. A check at import
compares both ways on samples; if they ever differ, the constructors are used
(``FAST_BUILDERS``; tests/pipeline/probe/test_direct_builders.py compares them on generated
requests and responses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

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


def _public_core_request(request: httpx.Request) -> httpcore.Request:
    """The httpcore request httpx's transports build for ``request``, as they build it."""
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


def _public_httpx_response(sent: httpcore.Response, body: Any) -> httpx.Response:
    """The httpx response httpx's transports make of httpcore's, as they make it."""
    return httpx.Response(
        status_code=sent.status,
        headers=sent.headers,
        stream=body(sent.stream),
        extensions=sent.extensions,
    )


# The constructors above validate again what httpx (request) and httpcore (response) have
# validated already: every header goes through two isinstance checks against typing ABCs
# and a type check per name and value. Assigning the same attributes to a bare instance
# gives an equal object for ~3.4 us less a request (timeit: core_request 3.55 -> 0.88 us,
# httpx_response 1.45 -> 0.68 us). _fast_builders_agree() checks at import, on samples, that
# both ways give equal objects; if they ever differ (another httpcore or httpx), the
# constructors are used.
_new = object.__new__
_METHODS: Final = {
    name: name.encode("ascii")
    for name in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
}


def _fast_core_request(request: httpx.Request) -> httpcore.Request:
    method = _METHODS.get(request.method)
    extensions = request.extensions
    if method is None or "target" in extensions:  # rare: let the constructor handle it
        return _public_core_request(request)
    url = request.url
    target = _new(httpcore.URL)
    target.scheme = url.raw_scheme
    target.host = url.raw_host
    target.port = url.port
    target.target = url.raw_path
    core = _new(httpcore.Request)
    core.method = method
    core.url = target
    core.headers = request.headers.raw  # a new list of (bytes, bytes), like httpcore's copy
    core.stream = request.stream  # httpx's byte stream: never None, never bytes
    core.extensions = extensions
    return core


def _fast_httpx_response(sent: httpcore.Response, body: Any) -> httpx.Response:
    headers = _new(httpx.Headers)
    # httpcore's headers are (bytes, bytes) pairs (its Response enforces it).
    headers._list = [(key, key.lower(), value) for key, value in sent.headers]
    headers._encoding = None
    response = _new(httpx.Response)
    response.status_code = sent.status
    response.headers = headers
    response._request = None
    response.next_request = None
    response.extensions = dict(sent.extensions)
    response.history = []
    response.is_closed = False
    response.is_stream_consumed = False
    response.default_encoding = "utf-8"
    response.stream = body(sent.stream)
    response._num_bytes_downloaded = 0
    return response


def _state(obj: object) -> dict[str, Any]:
    """``vars(obj)``, with the URL and headers it holds compared by their own vars."""
    return {
        name: vars(value) if isinstance(value, httpcore.URL | httpx.Headers) else value
        for name, value in vars(obj).items()
    }


def _fast_builders_agree() -> bool:
    """Whether the fast builders give what the constructors give, on samples of each kind."""
    try:
        for request in (
            httpx.Request("GET", "http://Example.test/a/b?q=1&r=%20", headers={"X-A": "b"}),
            httpx.Request(
                "POST",
                "https://user:pw@[::1]:8443/",
                content=b"{}",
                extensions={"timeout": {"read": 1.0}, "sni_hostname": "x"},
            ),
        ):
            if _state(_fast_core_request(request)) != _state(_public_core_request(request)):
                return False
        sent = httpcore.Response(
            503,
            headers=[(b"Content-Type", b"text/plain"), (b"retry-after", b"1")],
            content=b"x",
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": b"Unavailable"},
        )

        def same(stream: Any) -> Any:
            return stream

        return _state(_fast_httpx_response(sent, same)) == _state(
            _public_httpx_response(sent, same)
        )
    except Exception:  # noqa: BLE001 - any surprise: use the constructors
        return False


FAST_BUILDERS: Final = _fast_builders_agree()

core_request: Callable[[httpx.Request], httpcore.Request] = (
    _fast_core_request if FAST_BUILDERS else _public_core_request
)
"""The httpcore request httpx's transports build for ``request``."""

httpx_response: Callable[[httpcore.Response, Any], httpx.Response] = (
    _fast_httpx_response if FAST_BUILDERS else _public_httpx_response
)
"""The httpx response httpx's transports make of httpcore's; its second argument is the
transport's body wrapper (``AsyncResponseStream`` or ``ResponseStream``)."""


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
