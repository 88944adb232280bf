"""The fast builders of ``_direct`` give the objects httpx's transports build, field by field.

``core_request`` and ``httpx_response`` fill bare instances instead of calling the
constructors (which validate again what httpx and httpcore have validated already). Here,
for generated requests and responses, both ways must give equal objects; and where the
check at import would fail, the constructors must be what the probe uses.
"""

from __future__ import annotations

import string
from typing import Any

import httpcore
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.probe._direct import (
    FAST_BUILDERS,
    _fast_builders_agree,
    _fast_core_request,
    _fast_httpx_response,
    _public_core_request,
    _public_httpx_response,
    _state,
    core_request,
    httpx_response,
)

_TOKEN = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
_SEGMENT = st.text(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@", max_size=12)
_HOSTS = st.sampled_from(
    ["127.0.0.1", "localhost", "Example.TEST", "[::1]", "[2001:db8::1]", "xn--bcher-kva.example"]
)


@st.composite
def requests(draw: st.DrawFn) -> httpx.Request:
    scheme = draw(st.sampled_from(["http", "https"]))
    port = draw(st.none() | st.integers(1, 65535))
    path = "/" + "/".join(draw(st.lists(_SEGMENT, max_size=4)))
    query = draw(st.none() | st.dictionaries(_TOKEN, _SEGMENT, max_size=3))
    url = f"{scheme}://{draw(_HOSTS)}{'' if port is None else f':{port}'}{path}"
    method = draw(
        st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])
        | st.sampled_from(["PURGE", "PROPFIND", "get"])  # extension methods, lower case
    )
    headers = draw(st.lists(st.tuples(_TOKEN, _SEGMENT), max_size=6))
    content = draw(st.none() | st.binary(max_size=32))
    extensions: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "timeout": st.just({"connect": 1.0, "read": 2.0, "write": 3.0, "pool": 4.0}),
                "sni_hostname": st.just("sni.example"),
                "target": st.sampled_from([b"*", b"/other?x=1"]),
            },
        )
    )
    return httpx.Request(
        method, url, params=query, headers=headers, content=content, extensions=extensions
    )


@st.composite
def responses(draw: st.DrawFn) -> httpcore.Response:
    headers = draw(
        st.lists(
            st.tuples(_TOKEN.map(str.encode), _SEGMENT.map(str.encode)),
            max_size=8,
        )
    )
    extensions = draw(
        st.fixed_dictionaries(
            {"http_version": st.sampled_from([b"HTTP/1.1", b"HTTP/2"])},
            optional={"reason_phrase": st.just(b"Whatever")},
        )
    )
    return httpcore.Response(
        draw(st.integers(100, 599)), headers=headers, content=b"body", extensions=extensions
    )


def test_the_pinned_httpx_and_httpcore_take_the_fast_builders() -> None:
    assert FAST_BUILDERS
    assert core_request is _fast_core_request
    assert httpx_response is _fast_httpx_response


@settings(max_examples=300, deadline=None)
@given(requests())
def test_a_fast_core_request_equals_the_constructors(request: httpx.Request) -> None:
    fast, public = _fast_core_request(request), _public_core_request(request)
    assert type(fast) is type(public) is httpcore.Request
    assert type(fast.url) is httpcore.URL
    assert _state(fast) == _state(public)
    assert fast.stream is request.stream
    assert fast.headers is not request.headers.raw  # a list of its own, as httpcore's copy


@settings(max_examples=300, deadline=None)
@given(responses())
def test_a_fast_httpx_response_equals_the_constructor(sent: httpcore.Response) -> None:
    def wrap(stream: Any) -> tuple[str, Any]:
        return ("wrapped", stream)

    fast, public = _fast_httpx_response(sent, wrap), _public_httpx_response(sent, wrap)
    assert type(fast) is type(public) is httpx.Response
    assert _state(fast) == _state(public)
    assert fast.extensions is not sent.extensions  # a copy, as httpx makes
    assert list(fast.headers.multi_items()) == list(public.headers.multi_items())
    assert fast.headers.raw == public.headers.raw == sent.headers


def test_a_response_built_fast_reads_and_closes_as_httpx_s() -> None:
    sent = httpcore.Response(
        200, headers=[(b"Content-Type", b"text/plain; charset=latin-1")], content=b"caf\xe9"
    )
    response = _fast_httpx_response(sent, lambda stream: httpx.ByteStream(b"caf\xe9"))
    assert response.read() == b"caf\xe9"
    assert response.text == "café"
    assert response.is_closed and response.is_stream_consumed
    assert response.num_bytes_downloaded == 4
    assert response.headers["content-type"] == "text/plain; charset=latin-1"


def test_when_httpcore_builds_another_request_the_constructors_are_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A httpcore whose Request keeps one attribute more: the fast request is unequal, so
    the check at import says no, and the probe would use the constructors."""
    assert _fast_builders_agree()
    init = httpcore.Request.__init__

    def with_more(self: httpcore.Request, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.priority = 0  # type: ignore[attr-defined]

    monkeypatch.setattr(httpcore.Request, "__init__", with_more)
    assert not _fast_builders_agree()


def test_when_httpx_builds_another_response_the_constructors_are_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    init = httpx.Response.__init__

    def with_more(self: httpx.Response, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._elapsed_ns = 0  # type: ignore[attr-defined]

    monkeypatch.setattr(httpx.Response, "__init__", with_more)
    assert not _fast_builders_agree()
