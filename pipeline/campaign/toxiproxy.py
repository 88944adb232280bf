"""Toxiproxy for the campaign's TCP faults: run the built server, drive it over its REST API.

:class:`Toxiproxy` starts the binary ``scripts/toxiproxy-build`` put in ``.cache/toxiproxy``
(``-host 127.0.0.1 -port P``), waits until ``GET /version`` answers and stops it on exit.
:class:`ToxiproxyClient` is a typed, synchronous client of the REST API (proxies, toxics,
reset); every non-2xx answer raises :class:`ToxiproxyError` carrying the API's own message.
:class:`TcpFaults` maps the profile's TCP incident kinds onto toxics of one proxy:

=================  ===========  =============================================================
kind               toxic        profile params -> toxic attributes
=================  ===========  =============================================================
tcp_latency        latency      latency_ms -> latency, jitter_ms -> jitter
tcp_bandwidth      bandwidth    rate_kbps -> rate (kilobytes per second, Toxiproxy's unit)
tcp_reset_peer     reset_peer   timeout_ms -> timeout
tcp_timeout        timeout      timeout_ms -> timeout (0: stall until the toxic is removed)
tcp_slicer         slicer       average_size, size_variation, delay_us -> delay
=================  ===========  =============================================================

Every kind also takes ``toxicity`` (share of connections hit, default 1.0) and ``stream``.
Toxics go ``downstream`` (upstream -> caller) by default: the request reaches the upstream
and its *response* is delayed, throttled, reset, stalled or sliced. That is the failure a
caller meets in production (the server did the work, the answer never arrives intact), the
hard case for retries, and where the bytes are (responses are bigger than requests, so
bandwidth and slicer would barely touch a small request). ``stream = "upstream"`` in a
profile's params turns a toxic onto the requests instead.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import httpx

from pipeline.campaign._ports import free_port

__all__ = [
    "BINARY",
    "TOXIC_KINDS",
    "Proxy",
    "TcpFaults",
    "Toxic",
    "Toxiproxy",
    "ToxiproxyClient",
    "ToxiproxyError",
    "toxic_for",
]

REPO: Final = Path(__file__).resolve().parents[2]
BINARY: Final = REPO / ".cache" / "toxiproxy" / "bin" / "server"

# kind -> (toxic type, {profile param: toxic attribute}, {attribute: default})
TOXIC_KINDS: Final[Mapping[str, tuple[str, Mapping[str, str], Mapping[str, int]]]] = {
    "tcp_latency": ("latency", {"latency_ms": "latency", "jitter_ms": "jitter"}, {"jitter": 0}),
    "tcp_bandwidth": ("bandwidth", {"rate_kbps": "rate"}, {}),
    "tcp_reset_peer": ("reset_peer", {"timeout_ms": "timeout"}, {"timeout": 0}),
    "tcp_timeout": ("timeout", {"timeout_ms": "timeout"}, {"timeout": 0}),
    "tcp_slicer": (
        "slicer",
        {"average_size": "average_size", "size_variation": "size_variation", "delay_us": "delay"},
        {"size_variation": 0, "delay": 0},
    ),
}
_COMMON_PARAMS: Final = frozenset({"toxicity", "stream"})


class ToxiproxyError(Exception):
    """Toxiproxy refused or failed a request; ``str(exc)`` is its message, ``status`` its code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Toxic:
    """One toxic as the API describes it (attributes are Toxiproxy's names and units)."""

    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Toxic:
        return cls(
            name=str(raw["name"]),
            type=str(raw["type"]),
            stream=str(raw.get("stream", "downstream")),
            toxicity=float(raw.get("toxicity", 1.0)),
            attributes={str(k): int(v) for k, v in (raw.get("attributes") or {}).items()},
        )


@dataclass(frozen=True)
class Proxy:
    """A proxy: it listens on ``listen`` (host:port) and forwards to ``upstream``."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[Toxic, ...] = ()

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Proxy:
        return cls(
            name=str(raw["name"]),
            listen=str(raw["listen"]),
            upstream=str(raw["upstream"]),
            enabled=bool(raw.get("enabled", True)),
            toxics=tuple(Toxic.from_json(t) for t in raw.get("toxics") or ()),
        )


def toxic_for(kind: str, params: Mapping[str, Any], *, name: str) -> Toxic:
    """The toxic for a profile incident; :class:`ValueError` naming the bad kind or param."""
    if kind not in TOXIC_KINDS:
        raise ValueError(f"{kind!r} is not a TCP fault (one of {', '.join(sorted(TOXIC_KINDS))})")
    toxic_type, names, defaults = TOXIC_KINDS[kind]
    unknown = set(params) - set(names) - _COMMON_PARAMS
    if unknown:
        allowed = ", ".join(sorted({*names, *_COMMON_PARAMS}))
        raise ValueError(f"{kind}: unknown params {sorted(unknown)} (allowed: {allowed})")
    attributes = dict(defaults)
    for param, attribute in names.items():
        if param not in params:
            if attribute not in defaults:
                raise ValueError(f"{kind}: param {param!r} is required")
            continue
        value = params[param]
        if not _is_number(value) or value < 0:
            raise ValueError(f"{kind}: {param} must be a number >= 0, got {value!r}")
        attributes[attribute] = round(value)
    if kind == "tcp_bandwidth" and attributes["rate"] <= 0:
        raise ValueError("tcp_bandwidth: rate_kbps must be > 0 (0 means no limit)")
    if kind == "tcp_slicer" and attributes["average_size"] <= 0:
        raise ValueError("tcp_slicer: average_size must be > 0")
    toxicity = params.get("toxicity", 1.0)
    if not _is_number(toxicity):
        raise ValueError(f"{kind}: toxicity must be a number, got {toxicity!r}")
    if not 0.0 <= toxicity <= 1.0:
        raise ValueError(f"{kind}: toxicity must be in [0, 1], got {toxicity}")
    stream = params.get("stream", "downstream")
    if stream not in ("downstream", "upstream"):
        raise ValueError(f"{kind}: stream must be 'downstream' or 'upstream', got {stream!r}")
    return Toxic(name, toxic_type, stream, float(toxicity), attributes)


class ToxiproxyClient:
    """Synchronous client of Toxiproxy's REST API at ``api_url`` (``http://127.0.0.1:P``)."""

    def __init__(self, api_url: str, *, timeout_s: float = 5.0) -> None:
        # Toxiproxy answers 403 to a browser-like User-Agent; httpx's default one is fine.
        self._http = httpx.Client(base_url=api_url, timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ToxiproxyError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return response.json() if response.content.strip() else None
        try:
            message = str(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            message = response.text.strip() or response.reason_phrase
        raise ToxiproxyError(
            f"{method} {path}: {response.status_code} {message}", response.status_code
        )

    def version(self) -> str:
        return str(self._call("GET", "/version")["version"])

    def create_proxy(self, name: str, listen_port: int, upstream: str) -> Proxy:
        """A proxy on ``127.0.0.1:listen_port`` (0: Toxiproxy picks) to ``upstream`` host:port."""
        body = {"name": name, "listen": f"127.0.0.1:{listen_port}", "upstream": upstream}
        return Proxy.from_json(self._call("POST", "/proxies", body))

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def proxies(self) -> dict[str, Proxy]:
        raw = self._call("GET", "/proxies")
        return {name: Proxy.from_json(p) for name, p in raw.items()}

    def proxy(self, name: str) -> Proxy:
        return Proxy.from_json(self._call("GET", f"/proxies/{name}"))

    def add_toxic(self, proxy: str, toxic: Toxic) -> Toxic:
        return Toxic.from_json(self._call("POST", f"/proxies/{proxy}/toxics", toxic.to_json()))

    def remove_toxic(self, proxy: str, toxic_name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic_name}")

    def toxics(self, proxy: str) -> list[Toxic]:
        return [Toxic.from_json(t) for t in self._call("GET", f"/proxies/{proxy}/toxics")]

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")


class TcpFaults:
    """The incident driver's TCP faults: one toxic per incident on the proxy ``proxy``."""

    def __init__(self, client: ToxiproxyClient, proxy: str) -> None:
        self.client = client
        self.proxy = proxy

    def start(self, incident_id: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        toxic = self.client.add_toxic(self.proxy, toxic_for(kind, params, name=incident_id))
        return {"proxy": self.proxy, "toxic": toxic.to_json()}

    def stop(self, incident_id: str) -> None:
        try:
            self.client.remove_toxic(self.proxy, incident_id)
        except ToxiproxyError as exc:
            if exc.status != 404:  # already gone (a reset): the incident is over either way
                raise


class Toxiproxy:
    """``with Toxiproxy() as tp: tp.client.create_proxy(...)``: the server, on 127.0.0.1.

    Its log (one line per connection) goes to ``log_path``, or to a temporary file removed
    on exit; a server that dies while starting raises :class:`ToxiproxyError` with the log.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        binary: Path = BINARY,
        log_path: Path | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._client: ToxiproxyClient | None = None
        self._temp_log: Path | None = None

    @property
    def client(self) -> ToxiproxyClient:
        if self._client is None:
            raise ToxiproxyError("Toxiproxy is not running (use it as a context manager)")
        return self._client

    def __enter__(self) -> Self:
        if not os.access(self.binary, os.X_OK):
            raise ToxiproxyError(
                f"no Toxiproxy binary at {self.binary}: run `make setup` "
                "(or `bash scripts/toxiproxy-build`) to build it"
            )
        if not _port_is_free(self.port):
            raise ToxiproxyError(f"cannot start Toxiproxy: port {self.port} on 127.0.0.1 is taken")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="toxiproxy-", suffix=".log")
            os.close(fd)
            self._temp_log = Path(name)
        log = self.log_path or self._temp_log
        assert log is not None
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our built binary, fixed arguments
                [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LOG_LEVEL": os.environ.get("TOXIPROXY_LOG_LEVEL", "warn")},
            )
        self._client = ToxiproxyClient(self.api_url, timeout_s=2.0)
        try:
            self._wait_ready(log)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, log: Path) -> None:
        assert self.process is not None and self._client is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise ToxiproxyError(
                    f"Toxiproxy exited with {self.process.returncode} while starting on "
                    f"port {self.port}: {tail.strip() or '(no output)'}"
                )
            try:
                self._client.version()
                return
            except ToxiproxyError:
                if time.monotonic() > deadline:
                    raise ToxiproxyError(
                        f"Toxiproxy did not answer {self.api_url}/version "
                        f"within {self.start_timeout_s} s"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._temp_log is not None:
            self._temp_log.unlink(missing_ok=True)
            self._temp_log = None

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
