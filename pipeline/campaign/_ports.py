"""A free TCP port on loopback for the campaign's own servers (Prometheus, workers, proxies)."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (free until someone else binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
