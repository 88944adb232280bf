"""The fault upstream's counters and a typed, synchronous client of its control API.

:class:`UpstreamStats` is the body of ``GET /_stats`` (the server fills it, the client decodes
it). :class:`UpstreamControl` puts and deletes faults and reads the stats; a refused call
raises :class:`UpstreamControlError` carrying the server's own message.
"""

from __future__ import annotations

import time
from typing import Any, Final, Self

import httpx
import msgspec

__all__ = ["UpstreamControl", "UpstreamControlError", "UpstreamStats"]

CONTROL_PREFIX: Final = "/_faults"
STATS_PATH: Final = "/_stats"
HEALTH_PATH: Final = "/health"


class UpstreamStats(msgspec.Struct, kw_only=True):
    """Counters since the upstream started. Load requests only, unless the name says so."""

    requests: int = 0
    """Load requests read (everything but the control API and /health)."""
    control_requests: int = 0
    by_status: dict[str, int] = msgspec.field(default_factory=dict)
    """Responses sent per status code, load and control."""
    fault_hits: dict[str, int] = msgspec.field(default_factory=dict)
    """Per fault id (also of faults deleted since), the requests it acted on."""
    resets: int = 0
    truncations: int = 0
    slow_bodies: int = 0
    hangs_total: int = 0
    hangs_in_progress: int = 0
    hang_overflows: int = 0
    """Hangs refused (answered 503) because ``max_hangs`` were already in progress."""
    connections_open: int = 0
    connections_total: int = 0
    connection_overflows: int = 0
    """Connections refused (503, close) because ``max_connections`` were open."""
    header_overflows: int = 0
    """Requests refused with 431: a head larger than the limit."""
    bad_requests: int = 0
    """Other malformed requests (400, 413, 501), answered and closed."""
    idle_timeouts: int = 0
    """Connections closed because no request came within the idle timeout."""
    faults_active: int = 0


class UpstreamControlError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamControl:
    """``UpstreamControl("http://10.213.0.2:8000")``: drive one fault upstream."""

    def __init__(self, base_url: str, *, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        # trust_env=False: a proxy from the environment must never carry the control calls.
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise UpstreamControlError(f"{method} {self.base_url}{path}: {exc!r}") from exc
        return response

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> UpstreamControlError:
        try:
            message = str(response.json().get("error", response.text))
        except ValueError:
            message = response.text
        return UpstreamControlError(
            f"{what}: {response.status_code} {message}", response.status_code
        )

    def set_fault(
        self, fault_id: str, kind: str, route: str | None, params: dict[str, Any]
    ) -> None:
        """Put (or replace) fault ``fault_id``; it acts on the next request read."""
        body = {"kind": kind, "route": route, "params": params}
        response = self._call("PUT", f"{CONTROL_PREFIX}/{fault_id}", body)
        if response.status_code != 204:
            raise self._fail(response, f"set fault {fault_id}")

    def clear_fault(self, fault_id: str, *, missing_ok: bool = True) -> None:
        """Delete fault ``fault_id``; an unknown id is fine unless ``missing_ok`` is False."""
        response = self._call("DELETE", f"{CONTROL_PREFIX}/{fault_id}")
        if response.status_code == 204 or (response.status_code == 404 and missing_ok):
            return
        raise self._fail(response, f"clear fault {fault_id}")

    def faults(self) -> list[dict[str, Any]]:
        response = self._call("GET", CONTROL_PREFIX)
        if response.status_code != 200:
            raise self._fail(response, "list faults")
        found: list[dict[str, Any]] = response.json()["faults"]
        return found

    def stats(self) -> UpstreamStats:
        response = self._call("GET", STATS_PATH)
        if response.status_code != 200:
            raise self._fail(response, "stats")
        return msgspec.json.decode(response.content, type=UpstreamStats)

    def wait_ready(self, timeout: float) -> None:
        """Return once ``GET /health`` answers 200; :class:`UpstreamControlError` after
        ``timeout`` seconds with the last error seen."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                response = self._http.get(HEALTH_PATH, timeout=min(1.0, max(timeout, 0.1)))
                if response.status_code == 200:
                    return
                last = f"status {response.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() >= deadline:
                raise UpstreamControlError(
                    f"the upstream at {self.base_url} is not ready after {timeout:g} s: {last}"
                )
            time.sleep(0.05)
