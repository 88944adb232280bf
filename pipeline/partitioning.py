"""Which Kafka partition a table key lives on: one rule for the emitter and the query router.

The workers' Faust tables route a key to a partition by hashing the bytes of the key as
Faust's ``json`` key serializer writes it (a ``str`` key becomes a JSON string, quotes
included) with Kafka's default partitioner: ``toPositive(murmur2(bytes)) % partitions``.
The emitter sends each batch with an explicit partition computed the same way, so every event
of a key reaches the worker that owns that key's table rows, and a query for a key can be sent
to that worker (docs/emitter.md, "Partitioning").

``key_bytes`` writes compact JSON with UTF-8 text left unescaped, exactly like ``orjson``,
which Faust uses when it is installed. Faust without ``orjson`` falls back to ``json.dumps``,
which escapes non-ASCII text (``"é"`` becomes ``"\\u00e9"``): the same key would then hash to
another partition. The two agree on printable ASCII; the tests check ``key_bytes`` against
Faust's own serializer.

murmur2 is aiokafka's port of the Java client's ``Utils.murmur2`` (checked against the Java
``UtilsTest`` vectors in the tests). It is pure Python (~10 us for a short key), so results are
memoized in a bounded LRU cache: table keys are (service, method, route template) triples,
few by design.
"""

from __future__ import annotations

import functools
from typing import Final

import msgspec
from aiokafka.partitioner import DefaultPartitioner

__all__ = ["PARTITION_CACHE_SIZE", "key_bytes", "partition_for_key", "partition_for_key_bytes"]

PARTITION_CACHE_SIZE: Final = 8192

_partitioner = DefaultPartitioner()
_encode = msgspec.json.Encoder().encode


def key_bytes(key: str) -> bytes:
    """The record-key bytes of a table key: the key as a compact UTF-8 JSON string."""
    return _encode(key)


def partition_for_key_bytes(data: bytes, num_partitions: int) -> int:
    """Where Kafka's default partitioner puts a record whose key is ``data``."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    partitions = range(num_partitions)
    partition: int = _partitioner(data, partitions, partitions)
    return partition


@functools.lru_cache(maxsize=PARTITION_CACHE_SIZE)
def partition_for_key(key: str, num_partitions: int) -> int:
    """The partition of table key ``key`` in a topic of ``num_partitions`` partitions."""
    return partition_for_key_bytes(key_bytes(key), num_partitions)
