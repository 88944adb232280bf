"""Route normalization: examples, properties (Hypothesis), templates and the cap."""

from __future__ import annotations

import re
import threading
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.probe.routes import (
    MAX_ROUTE_LENGTH,
    OVERFLOW_ROUTE,
    RouteTable,
    compile_template,
    normalize_path,
)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/", "/"),
        ("", "/"),
        ("/users/42", "/users/{id}"),
        ("/users/42/orders/7?expand=1#top", "/users/{id}/orders/{id}"),
        (f"/carts/{uuid.UUID(int=12345)}", "/carts/{uuid}"),
        ("/carts/3F2504E0-4F89-11D3-9A0C-0305E82C3301/items", "/carts/{uuid}/items"),
        ("/blobs/9f86d081884c7d659a2feaa0c55ad015", "/blobs/{hash}"),
        ("/blobs/deadbeefdeadbeef", "/blobs/{hash}"),
        ("/users/bob%40example.com/prefs", "/users/{email}/prefs"),
        ("/users/bob.smith+x@example.co.uk", "/users/{email}"),
        ("/reset/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9", "/reset/{token}"),
        ("/reset/dGhpcyBpcyBhIHNlY3JldCB0b2tlbg2", "/reset/{token}"),
        ("/v1/users", "/v1/users"),
        ("/api/oauth2/h264", "/api/oauth2/h264"),
        ("/orders/order-17", "/orders/order-{id}"),
        ("/invoices/INV-2024-0001.pdf", "/invoices/INV-{id}-{id}.pdf"),
        ("/files/abc12345", "/files/abc{id}"),
        ("/a-very-long-but-harmless-slug-title", "/a-very-long-but-harmless-slug-title"),
        ("/x/" + "a" * 65, "/x/{token}"),
        ("users/42", "/users/{id}"),
        ("/users//42/", "/users//{id}/"),
    ],
)
def test_examples(path: str, route: str) -> None:
    assert normalize_path(path) == route


def test_long_routes_are_cut_at_a_segment() -> None:
    route = normalize_path("/seg" * 100)
    assert len(route) <= MAX_ROUTE_LENGTH and route.endswith("/{long}")
    assert normalize_path(route) == route


_segment = st.one_of(
    st.text(st.characters(codec="ascii", exclude_characters="/"), max_size=30),
    st.integers(min_value=0, max_value=10**12).map(str),
    st.uuids().map(str),
    st.binary(min_size=8, max_size=32).map(bytes.hex),
    st.emails().filter(lambda e: not set("/?#") & set(e)),
    st.from_regex(r"[A-Za-z0-9_-]{20,40}", fullmatch=True),
    st.sampled_from(["v1", "h264", "order-12", "{id}", "a1b2", "%40", "?q=1", "#f", "x@y.zz"]),
)
paths = st.lists(_segment, max_size=12).map(lambda parts: "/" + "/".join(parts))
_ID_RUN = re.compile(r"(?<![A-Za-z0-9])[0-9]+(?![A-Za-z0-9])|[0-9]{4,}")


@settings(max_examples=400, deadline=None)
@given(paths)
def test_idempotent(path: str) -> None:
    once = normalize_path(path)
    assert normalize_path(once) == once


@settings(max_examples=400, deadline=None)
@given(paths)
def test_shape(path: str) -> None:
    route = normalize_path(path)
    assert route.startswith("/") and 1 <= len(route) <= MAX_ROUTE_LENGTH
    assert "?" not in route and "#" not in route
    # No id-like digit run survives: whole numbers and runs of 4+ digits are gone.
    assert _ID_RUN.search(route) is None


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**30),
    st.uuids(),
    st.emails().filter(lambda e: not set("/?#") & set(e)),  # a path would encode them
)
def test_ids_never_survive(number: int, ident: uuid.UUID, email: str) -> None:
    route = normalize_path(f"/a/{number}/b/{ident}/c/{email}?token={number}")
    assert route == "/a/{id}/b/{uuid}/c/{email}"


def test_templates_win_and_are_not_capped() -> None:
    table = RouteTable(["/users/{id}/orders", "/files/{name}"], max_routes_per_upstream=1)
    assert table.route("h:80", "/users/abc/orders?x=1") == "/users/{id}/orders"
    assert table.route("h:80", "/files/report.pdf") == "/files/{name}"
    assert table.route("h:80", "/users/abc/orders/9") == "/users/abc/orders/{id}"  # no match
    assert table.route("h:80", "/other") == OVERFLOW_ROUTE  # the cap of 1 is used up
    assert table.route("h:80", "/users/x/orders") == "/users/{id}/orders"


def test_cap_per_upstream_and_overflow_count() -> None:
    table = RouteTable(max_routes_per_upstream=3, max_upstreams=2)
    for index in range(3):
        assert table.route("a:80", f"/r{'x' * index}") == f"/r{'x' * index}"
    assert table.route("a:80", "/new") == OVERFLOW_ROUTE
    assert table.route("a:80", "/rx") == "/rx"  # known routes still resolve
    assert table.route("b:80", "/new") == "/new"  # caps are per upstream
    assert table.route("c:80", "/new") == OVERFLOW_ROUTE  # past max_upstreams
    assert table.overflows == 2
    assert table.routes_of("a:80") == {"/r", "/rx", "/rxx"}


def test_cap_holds_under_threads() -> None:
    table = RouteTable(max_routes_per_upstream=50)

    def work(offset: int) -> None:
        for index in range(200):
            table.route("h:1", f"/p{offset}-{'x' * (index % 97)}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(table.routes_of("h:1")) == 50


def test_bad_templates_are_rejected() -> None:
    for bad in ("users/{id}", "/a?b=1", "/" + "x" * 300):
        with pytest.raises(ValueError):
            compile_template(bad)
