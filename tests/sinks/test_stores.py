"""LocalStore (the embedded default) and the S3 error mapping, without a server."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest
from botocore.exceptions import (  # type: ignore[import-untyped]
    ClientError,
    EndpointConnectionError,
)

from sinks.errors import (
    ChecksumMismatch,
    InvalidKey,
    NoSuchObject,
    SinkError,
    SinkRejected,
    SinkUnavailable,
)
from sinks.s3 import map_s3_errors
from sinks.stores import LocalStore, ObjectStore
from tests.sinks.fakes import MemoryStore

KEY = "egresswatch/events/service=a/date=2025-11-24/hour=16/t+0+0.jsonl"


async def test_local_put_get_list(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert isinstance(store, ObjectStore) and isinstance(MemoryStore(), ObjectStore)
    await store.put(KEY, b"{}\n")
    await store.put(KEY, b'{"a":1}\n')  # overwrite
    other = KEY.replace("service=a", "service=b")
    await store.put(other, b"x")
    assert await store.get(KEY) == b'{"a":1}\n'
    assert (tmp_path / KEY).read_bytes() == b'{"a":1}\n'
    assert await store.list_keys() == sorted([KEY, other])
    assert await store.list_keys("egresswatch/events/service=a/") == [KEY]
    assert await store.list_keys("egresswatch/events/service=") == sorted([KEY, other])
    assert await store.list_keys("nothing/") == []
    assert not list(tmp_path.rglob(".*.tmp"))  # no temporary files left behind


async def test_local_puts_are_atomic_under_concurrency(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    bodies = [bytes([n]) * 50_000 for n in range(20)]
    await asyncio.gather(*(store.put(KEY, body) for body in bodies))
    assert await store.get(KEY) in bodies


async def test_local_refuses_unsafe_keys_and_reports_missing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    for bad in ["", "/abs", "a/../b", "a//b", "a/./b", ".hidden/x", "a\\b"]:
        with pytest.raises(InvalidKey):
            await store.put(bad, b"x")
    with pytest.raises(NoSuchObject):
        await store.get("a/b")


async def test_local_maps_os_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = LocalStore(blocker)  # root is a file: every put fails
    with pytest.raises(SinkUnavailable):
        await store.put("a/b", b"x")


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def wrapped(error: ClientError) -> OSError:
    """What s3fs raises: an OSError whose cause is the ClientError."""
    exc = OSError(errno.EINVAL, "")
    exc.__cause__ = error
    return exc


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (wrapped(client_error("BadDigest", 400)), ChecksumMismatch),
        (client_error("InvalidDigest", 400), ChecksumMismatch),
        (wrapped(client_error("AccessDenied", 403)), SinkRejected),
        (client_error("NoSuchBucket", 404), SinkRejected),
        (client_error("NoSuchKey", 404), NoSuchObject),
        (client_error("SlowDown", 503), SinkUnavailable),
        (client_error("InternalError", 500), SinkUnavailable),
        (client_error("RequestTimeout", 408), SinkUnavailable),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), SinkUnavailable),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), SinkUnavailable),
        (TimeoutError(), SinkUnavailable),
        (FileNotFoundError("k"), NoSuchObject),
        (PermissionError("k"), SinkRejected),
    ],
)
def test_s3_errors_are_mapped_once(raised: BaseException, expected: type) -> None:
    with pytest.raises(SinkError) as info, map_s3_errors("k"):
        raise raised
    assert type(info.value) is expected and info.value.__cause__ is raised
    assert info.value.retriable == (expected in (ChecksumMismatch, SinkUnavailable))


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), map_s3_errors("k"):
        raise KeyError("a bug is not a store failure")


async def test_without_an_endpoint_the_embedded_default_is_a_folder(tmp_path: Path) -> None:
    from sinks.stores import open_store

    store = await open_store(None, local_root=tmp_path / "sink")
    assert isinstance(store, LocalStore) and store.root == tmp_path / "sink"
