"""Route normalization: turn a raw request path into a low-cardinality template.

An event never carries the raw path: ids, tokens and e-mail addresses are replaced by
placeholders, the query string and fragment are dropped, and each upstream may show at most
``max_routes_per_upstream`` distinct routes; the rest become :data:`OVERFLOW_ROUTE` (counted).

Order of resolution for one path:

1. the user's templates, in the order given (``"/users/{id}/orders"``: each ``{name}`` matches
   exactly one non-empty segment); the template itself is the route and is never capped;
2. else :func:`normalize_path`, segment by segment, first rule wins:

   =====================================  ============  ==========================
   segment                                 becomes       example
   =====================================  ============  ==========================
   digits only                             ``{id}``      ``42``
   UUID (8-4-4-4-12 hex)                   ``{uuid}``    ``3f2a…-…``
   e-mail (``@`` or ``%40``)               ``{email}``   ``bob%40example.com``
   longer than 64 characters               ``{token}``
   hex, 16 chars or more                   ``{hash}``    ``9f86d081884c7d65``
   20+ of ``[A-Za-z0-9_.~+=-]`` with a     ``{token}``   ``eyJhbGciOiJIUzI1NiJ9``
   digit and a letter
   a digit run standing alone inside a     ``…{id}…``    ``order-17`` ->
   segment, or any run of 4+ digits                      ``order-{id}``
   =====================================  ============  ==========================

   Short digit runs glued to letters stay (``v1``, ``h264``, ``oauth2``).
3. A route longer than 256 characters (the schema's limit) is cut at a segment boundary and
   ends in ``/{long}``.

:func:`normalize_path` is idempotent and its output never contains ``?`` or ``#`` (both are
property-tested). Paths are not percent-decoded: decoding is not idempotent, and the probe
only needs a stable label. Results are cached (bounded LRU), so the hot path is one cache hit
plus one set lookup.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

__all__ = [
    "MAX_ROUTE_LENGTH",
    "OVERFLOW_ROUTE",
    "RouteTable",
    "compile_template",
    "normalize_path",
]

OVERFLOW_ROUTE: Final = "/{overflow}"
MAX_ROUTE_LENGTH: Final = 256
_MAX_SEGMENT: Final = 64
_LONG_SUFFIX: Final = "/{long}"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"[0-9]+")
_EMAIL = re.compile(r"[^/@?#\s]+(?:@|%40)[A-Za-z0-9.-]+\.[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]")
_HEX = re.compile(r"[0-9a-fA-F]{16,}")
_TOKEN = re.compile(r"(?=[^/]*[0-9])(?=[^/]*[A-Za-z])[A-Za-z0-9_.~+=-]{20,}")
_DIGIT_RUN = re.compile(r"(?<![A-Za-z0-9])[0-9]+(?![A-Za-z0-9])|[0-9]{4,}")
_TEMPLATE_PARAM = re.compile(r"\{[^{}/]+\}")


def _normalize_segment(segment: str) -> str:
    if not segment:
        return segment
    if _DIGITS.fullmatch(segment):
        return "{id}"
    if _UUID.fullmatch(segment):
        return "{uuid}"
    if _EMAIL.fullmatch(segment):
        return "{email}"
    if len(segment) > _MAX_SEGMENT:
        return "{token}"
    if _HEX.fullmatch(segment):
        return "{hash}"
    if _TOKEN.fullmatch(segment):
        return "{token}"
    replaced = _DIGIT_RUN.sub("{id}", segment)
    if len(replaced) > _MAX_SEGMENT:
        return "{token}"
    return replaced


@lru_cache(maxsize=8192)
def normalize_path(path: str) -> str:
    """The default normalizer (see the module docstring). Pure, cached, idempotent."""
    cut = len(path)
    for mark in ("?", "#"):
        at = path.find(mark)
        if 0 <= at < cut:
            cut = at
    path = path[:cut]
    if not path.startswith("/"):
        path = "/" + path
    route = "/".join([_normalize_segment(s) for s in path.split("/")])
    if len(route) > MAX_ROUTE_LENGTH:
        head = route[: MAX_ROUTE_LENGTH - len(_LONG_SUFFIX)]
        route = head[: head.rfind("/")] + _LONG_SUFFIX
    return route


def compile_template(template: str) -> re.Pattern[str]:
    """``"/users/{id}/orders"`` -> a regex matching ``/users/<one segment>/orders``."""
    if not template.startswith("/"):
        raise ValueError(f"route template must start with '/': {template!r}")
    if len(template) > MAX_ROUTE_LENGTH or "?" in template or "#" in template:
        raise ValueError(f"route template too long or has a query/fragment: {template!r}")
    parts: list[str] = []
    last = 0
    for match in _TEMPLATE_PARAM.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append("[^/]+")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))


class RouteTable:
    """Path -> route for one transport: templates, default normalizer, per-upstream cap.

    Thread-safe. Memory is bounded: at most ``max_upstreams`` upstreams are tracked with up
    to ``max_routes_per_upstream`` routes each; a route for an upstream beyond that is
    :data:`OVERFLOW_ROUTE` too. ``overflows`` counts every request given the overflow route.
    """

    def __init__(
        self,
        templates: Iterable[str] = (),
        *,
        max_routes_per_upstream: int = 100,
        max_upstreams: int = 1024,
        cache_size: int = 4096,
    ) -> None:
        if max_routes_per_upstream < 1 or max_upstreams < 1:
            raise ValueError("route caps must be >= 1")
        self._templates = tuple((t, compile_template(t)) for t in templates)
        self._max_routes = max_routes_per_upstream
        self._max_upstreams = max_upstreams
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.overflows = 0
        # (route, capped): template routes are never capped.
        self._resolve = lru_cache(maxsize=cache_size)(self._resolve_uncached)

    def _resolve_uncached(self, path: str) -> tuple[str, bool]:
        cut = len(path)
        for mark in ("?", "#"):
            at = path.find(mark)
            if 0 <= at < cut:
                cut = at
        bare = path[:cut]
        for template, pattern in self._templates:
            if pattern.fullmatch(bare):
                return template, False
        return normalize_path(bare), True

    def route(self, upstream: str, path: str) -> str:
        """The route of ``path`` (raw path, query allowed) for a request to ``upstream``."""
        route, capped = self._resolve(path)
        if not capped:
            return route
        seen = self._seen.get(upstream)
        if seen is not None and route in seen:
            return route
        with self._lock:
            if seen is None:
                if len(self._seen) >= self._max_upstreams:
                    self.overflows += 1
                    return OVERFLOW_ROUTE
                seen = self._seen.setdefault(upstream, set())
            if route in seen:
                return route
            if len(seen) >= self._max_routes:
                self.overflows += 1
                return OVERFLOW_ROUTE
            seen.add(route)
            return route

    def routes_of(self, upstream: str) -> frozenset[str]:
        """The capped routes seen so far for ``upstream`` (templates not included)."""
        with self._lock:
            return frozenset(self._seen.get(upstream, ()))
