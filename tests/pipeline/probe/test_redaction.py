"""Redaction helpers: what the probe may write in a log line."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.probe.redaction import REDACTED, is_sensitive_header, redact_headers, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://user:pa55@api.test/v1/users/42?token=abc#frag",
            "https://api.test/v1/users/{id}?REDACTED",
        ),
        ("http://api.test:8080/", "http://api.test:8080/"),
        ("http://[::1]:9000/x", "http://[::1]:9000/x"),
        ("http://api.test/reset/eyJhbGciOiJIUzI1NiJ9abc", "http://api.test/reset/{token}"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(httpx.URL(url)) == expected


def test_redact_url_never_raises() -> None:
    assert redact_url("http://user:pw@host:notaport/x") == f"<{REDACTED} url>"


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "Cookie",
        "Set-Cookie",
        "X-API-Key",
        "X-Auth-Token",
        "x-amz-security-token",
        "X-Client-Secret",
        "X-Session-Id",
        b"authorization",
    ],
)
def test_sensitive_headers(name) -> None:
    assert is_sensitive_header(name)


@pytest.mark.parametrize("name", ["Accept", "Content-Type", "User-Agent", "traceparent"])
def test_plain_headers(name: str) -> None:
    assert not is_sensitive_header(name)


def test_redact_headers_all_shapes() -> None:
    expected = [("Authorization", REDACTED), ("Accept", "*/*")]
    raw = {"Authorization": "Bearer s3cr3t", "Accept": "*/*"}
    assert redact_headers(raw) == expected
    assert redact_headers(list(raw.items())) == expected
    assert redact_headers([(b"Authorization", b"Bearer s3cr3t"), (b"Accept", b"*/*")]) == expected
    assert redact_headers(httpx.Headers(raw)) == [("authorization", REDACTED), ("accept", "*/*")]


@given(st.from_regex(r"[A-Za-z0-9]{8,24}", fullmatch=True))
def test_secret_never_in_redacted_url(secret: str) -> None:
    url = f"https://u{secret}:p{secret}@api.test/v1/items?key={secret}&x={secret}#f{secret}"
    assert secret not in redact_url(url)
