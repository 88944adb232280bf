"""pipeline/partitioning.py: the key convention shared by the emitter and the query router."""

from __future__ import annotations

import json

import faust
import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faust.app.router import Router
from hypothesis import given
from hypothesis import strategies as st

from pipeline.partitioning import key_bytes, partition_for_key, partition_for_key_bytes

# Apache Kafka clients/src/test/.../common/utils/UtilsTest.java, testMurmur2 (Java ints).
JAVA_MURMUR2_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

keys = st.text(max_size=300)
partition_counts = st.integers(min_value=1, max_value=1024)


def _signed32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


@pytest.mark.parametrize(("data", "expected"), JAVA_MURMUR2_VECTORS.items())
def test_aiokafka_murmur2_matches_the_java_client(data: bytes, expected: int) -> None:
    assert _signed32(murmur2(data)) == expected


@pytest.mark.parametrize("data", JAVA_MURMUR2_VECTORS)
@pytest.mark.parametrize("num_partitions", [1, 2, 3, 8, 12, 100])
def test_partition_is_java_to_positive_murmur2_mod_n(data: bytes, num_partitions: int) -> None:
    # Java BuiltInPartitioner.partitionForKey: Utils.toPositive(Utils.murmur2(key)) % n
    expected = (JAVA_MURMUR2_VECTORS[data] & 0x7FFFFFFF) % num_partitions
    assert partition_for_key_bytes(data, num_partitions) == expected


def test_known_partitions_of_table_keys() -> None:
    # Pinned so that a change of the key convention cannot go unnoticed: it re-routes keys.
    assert key_bytes("checkout|GET|/api/v1/orders/{id}") == b'"checkout|GET|/api/v1/orders/{id}"'
    got = [partition_for_key(f"svc|GET|/r{i}", 8) for i in range(8)]
    expected = [(murmur2(f'"svc|GET|/r{i}"'.encode()) & 0x7FFFFFFF) % 8 for i in range(8)]
    assert got == expected


@given(keys, partition_counts)
def test_partition_for_key_is_deterministic_and_in_range(key: str, num_partitions: int) -> None:
    first = partition_for_key(key, num_partitions)
    assert 0 <= first < num_partitions
    assert partition_for_key(key, num_partitions) == first
    partition_for_key.cache_clear()
    assert partition_for_key(key, num_partitions) == first


@given(keys, partition_counts)
def test_partition_for_key_is_the_default_partitioner_on_key_bytes(
    key: str, num_partitions: int
) -> None:
    all_partitions = list(range(num_partitions))
    placed = DefaultPartitioner()(key_bytes(key), all_partitions, all_partitions)
    assert partition_for_key(key, num_partitions) == placed


@given(keys)
def test_key_bytes_is_a_json_string_that_round_trips(key: str) -> None:
    data = key_bytes(key)
    assert data.startswith(b'"') and data.endswith(b'"')
    assert json.loads(data) == key


@given(keys)
def test_key_bytes_is_what_the_faust_table_router_hashes(key: str) -> None:
    # Router._get_serialized_key is what app.router.key_store() hashes for a table key. Faust's
    # json codec writes UTF-8 text unescaped with orjson; without orjson it escapes non-ASCII,
    # and a non-ASCII key would then be routed elsewhere than the emitter sends it.
    app = _faust_app()
    table = app.tables["partitioning-test"]
    assert key_bytes(key) == Router._get_serialized_key(table, key)


_APP: faust.App | None = None


def _faust_app() -> faust.App:
    global _APP
    if _APP is None:
        _APP = faust.App("partitioning-test", broker="kafka://127.0.0.1:1", store="memory://")
        _APP.Table("partitioning-test", default=int, partitions=8)
    return _APP


def test_zero_partitions_is_an_error() -> None:
    with pytest.raises(ValueError, match="num_partitions"):
        partition_for_key("k", 0)
