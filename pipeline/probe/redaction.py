"""Make URLs and headers safe to log: the one place the probe formats them for humans.

The events themselves carry no URL and no header (``upstream`` is ``host:port``, ``route`` a
normalized template), so secrets cannot reach Kafka through them. This module is for every
other place a URL or headers could be written: log lines, exception messages, debug output.

- :func:`redact_url` keeps scheme, host and port, drops userinfo and fragment, replaces the
  path by its normalized route (paths carry tokens too: ``/reset/<token>``) and the whole
  query by ``REDACTED``.
- :func:`redact_headers` replaces the value of every credential-like header
  (``Authorization``, ``Cookie``, ``Set-Cookie``, ``Proxy-Authorization``, ``X-API-Key``, and
  any name containing ``auth``, ``token``, ``secret``, ``key``, ``passw``, ``session``,
  ``cookie``, ``signature`` or ``credential``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

import httpx

from pipeline.probe.routes import normalize_path

__all__ = ["REDACTED", "is_sensitive_header", "redact_headers", "redact_url"]

REDACTED: Final = "REDACTED"

_SENSITIVE_NAMES: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-amz-security-token",
    }
)
_SENSITIVE_PART: Final = re.compile(
    r"auth|token|secret|key|passw|session|cookie|signature|credential|private", re.IGNORECASE
)


def is_sensitive_header(name: str | bytes) -> bool:
    """Whether a header's value must never be logged."""
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    lowered = text.lower()
    return lowered in _SENSITIVE_NAMES or _SENSITIVE_PART.search(lowered) is not None


def redact_headers(
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | httpx.Headers,
) -> list[tuple[str, str]]:
    """``(name, value)`` pairs with every sensitive value replaced by ``REDACTED``."""
    if isinstance(headers, httpx.Headers):
        pairs: Iterable[tuple[str | bytes, str | bytes]] = headers.multi_items()
    elif isinstance(headers, Mapping):
        pairs = headers.items()
    else:
        pairs = headers
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        key = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        if is_sensitive_header(key):
            out.append((key, REDACTED))
        else:
            out.append((key, value.decode("latin-1") if isinstance(value, bytes) else str(value)))
    return out


def redact_url(url: httpx.URL | str) -> str:
    """``scheme://host:port/normalized/route`` plus ``?REDACTED`` if there was a query."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        host = parsed.host
        if ":" in host:
            host = f"[{host}]"
        port = f":{parsed.port}" if parsed.port is not None else ""
        route = normalize_path(parsed.raw_path.decode("ascii").partition("?")[0])
        query = f"?{REDACTED}" if parsed.query else ""
        return f"{parsed.scheme}://{host}{port}{route}{query}"
    except Exception:  # noqa: BLE001 - a log helper must not fail; say nothing about the URL
        return f"<{REDACTED} url>"
