"""What several benchmarks need around them: the local Kafka, topic clean-up, a free port."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["ROOT", "delete_topics", "free_port", "kafka_up"]

ROOT: Final = Path(__file__).resolve().parents[1]


def kafka_up() -> str:
    """Start the project's local Kafka if needed (idempotent); its bootstrap address."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "kafka-local"), "up"], check=True, capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("KAFKA_BOOTSTRAP="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"scripts/kafka-local up printed no KAFKA_BOOTSTRAP line: {out!r}")


async def delete_topics(bootstrap: str, tag: str) -> list[str]:
    """Delete every topic whose name holds ``tag`` (a run's own, Faust's too); their names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if tag in t]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
