"""A tiny standalone ``/metrics`` server for a worker, until the API serves the metrics.

:func:`serve_metrics` runs prometheus_client's threaded WSGI server on a daemon thread,
bound to loopback by default. It answers every path with the registry's exposition,
negotiating OpenMetrics (with exemplars) when the scraper asks for it, as Prometheus does.
``port=0`` picks a free port; read it back from ``handle.port``. ``close()`` stops the
server and frees the port; the handle is also a context manager.

Importing this module does not import Faust; it needs ``prometheus_client`` (the ``worker``
extra).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

__all__ = ["DEFAULT_METRICS_PORT", "MetricsServer", "serve_metrics"]

DEFAULT_METRICS_PORT: Final = 9464


class MetricsServer:
    """A running scrape server: ``host``, ``port``, ``url``; stop it with :meth:`close`."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host: str = str(httpd.server_address[0])
        self.port: int = int(httpd.server_address[1])
        self._closed = False

    @property
    def url(self) -> str:
        """The metrics URL (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve_metrics(
    registry: CollectorRegistry, host: str = "127.0.0.1", port: int = DEFAULT_METRICS_PORT
) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread."""
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(httpd, thread)
