"""The local RGW that scripts/rgw-local runs is a real S3 that does what the audit sink needs.

Through s3fs (what the sink uses) and botocore: buckets, PUT with Content-MD5 (a wrong one is
refused with BadDigest and stores nothing), LIST by key prefix, an outage of radosgw (calls fail
fast with connection errors, objects read back after the restart), and the script's own
contract (three stdout lines, idempotent ``up``, ``status`` exit codes, data kept over a clean
``down``/``up``, a cluster re-created after its OSD was killed).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import os
import socket
import time
from pathlib import Path

import pytest
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.exceptions import ClientError, EndpointConnectionError  # type: ignore[import-untyped]

from tests.ports import free_port
from tests.rgw import (
    RgwControl,
    S3Endpoint,
    open_s3fs,
    parse_s3_env,
    rgw_local,
    unique_bucket_name,
)

pytestmark = pytest.mark.integration

# Calls against a stopped radosgw must fail at once, not after botocore's retries.
FAIL_FAST = {"retries": {"mode": "standard", "max_attempts": 1}, "connect_timeout": 2}


def content_md5(data: bytes) -> str:
    """The Content-MD5 header value: base64 of the binary MD5 digest (not the hex form)."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - not security


async def test_put_with_content_md5_through_s3fs(s3_endpoint: S3Endpoint, s3_bucket: str) -> None:
    data = b"audit record\n" * 1000
    async with open_s3fs(s3_endpoint, **FAIL_FAST) as fs:
        # s3fs passes extra keyword arguments of pipe_file on to PutObject.
        answer = await fs._pipe_file(f"{s3_bucket}/ok.jsonl", data, ContentMD5=content_md5(data))
        assert answer["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324
        assert await fs._cat_file(f"{s3_bucket}/ok.jsonl") == data

        wrong = content_md5(data + b"x")
        with pytest.raises(OSError) as refused:
            await fs._pipe_file(f"{s3_bucket}/bad.jsonl", data, ContentMD5=wrong)
        # s3fs turns the ClientError into OSError(EINVAL) and keeps it as the cause; RGW sends
        # no message, so the code is only on the cause.
        assert refused.value.errno == errno.EINVAL
        cause = refused.value.__cause__
        assert isinstance(cause, ClientError)
        assert cause.response["Error"]["Code"] == "BadDigest"
        assert cause.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert not await fs._exists(f"{s3_bucket}/bad.jsonl")
        assert await fs._find(s3_bucket) == [f"{s3_bucket}/ok.jsonl"]


async def test_content_md5_through_botocore(s3_endpoint: S3Endpoint, s3_bucket: str) -> None:
    data = b'{"event": 1}\n'
    session = get_session()
    async with session.create_client("s3", **s3_endpoint.client_kwargs(**FAIL_FAST)) as client:
        await client.put_object(
            Bucket=s3_bucket, Key="good", Body=data, ContentMD5=content_md5(data)
        )
        with pytest.raises(ClientError) as refused:
            await client.put_object(
                Bucket=s3_bucket, Key="bad", Body=data, ContentMD5=content_md5(b"other")
            )
        assert refused.value.response["Error"]["Code"] == "BadDigest"
        with pytest.raises(ClientError) as missing:
            await client.head_object(Bucket=s3_bucket, Key="bad")
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

        # Content-MD5 is the integrity check this RGW (Ceph 16) enforces: it does not check
        # botocore's newer x-amz-checksum-* headers, even a plainly wrong one.
        await client.put_object(Bucket=s3_bucket, Key="crc", Body=data, ChecksumCRC32="AAAAAA==")
        got = await client.get_object(Bucket=s3_bucket, Key="crc")
        async with got["Body"] as body:
            assert await body.read() == data


async def test_list_by_prefix(s3_endpoint: S3Endpoint, s3_bucket: str) -> None:
    keys = [
        "audit/2026-01-01T10/a.jsonl",
        "audit/2026-01-01T10/b.jsonl",
        "audit/2026-01-01T11/a.jsonl",
        "audit/2026-01-02T00/a.jsonl",
        "other/x",
    ]
    async with open_s3fs(s3_endpoint, **FAIL_FAST) as fs:
        for key in keys:
            await fs._pipe_file(f"{s3_bucket}/{key}", key.encode())
        # A prefix that ends inside a "directory" name: s3fs find(prefix=...) lists by key.
        hour = await fs._find(f"{s3_bucket}/audit", prefix="2026-01-01T1")
        assert hour == [f"{s3_bucket}/{key}" for key in keys[:3]]
        day = await fs._find(f"{s3_bucket}/audit/2026-01-02T00")
        assert day == [f"{s3_bucket}/{keys[3]}"]
        listed = await fs._ls(f"{s3_bucket}/audit", refresh=True)
        assert sorted(listed) == [
            f"{s3_bucket}/audit/2026-01-01T10",
            f"{s3_bucket}/audit/2026-01-01T11",
            f"{s3_bucket}/audit/2026-01-02T00",
        ]

    session = get_session()
    async with session.create_client("s3", **s3_endpoint.client_kwargs(**FAIL_FAST)) as client:
        page = await client.list_objects_v2(Bucket=s3_bucket, Prefix="audit/2026-01-01T1")
        assert [item["Key"] for item in page["Contents"]] == keys[:3]
        page = await client.list_objects_v2(
            Bucket=s3_bucket, Prefix="audit/2026-01-01T10/", MaxKeys=1
        )
        assert page["IsTruncated"] and [item["Key"] for item in page["Contents"]] == keys[:1]


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_outage_and_restart(rgw_control: RgwControl, request: pytest.FixtureRequest) -> None:
    """radosgw stopped: calls fail with connection errors at once; restarted: data is there."""
    bucket = unique_bucket_name(request.node.name)
    objects = {f"{bucket}/before/{i}": f"object {i}".encode() for i in range(5)}
    async with open_s3fs(rgw_control.endpoint, **FAIL_FAST) as fs:
        await fs._mkdir(bucket)
        try:
            for path, data in objects.items():
                await fs._pipe_file(path, data, ContentMD5=content_md5(data))

            started = time.monotonic()
            await rgw_control.astop()
            assert time.monotonic() - started < 15
            assert refuses(rgw_control.port)

            for call in (
                lambda: fs._cat_file(f"{bucket}/before/0"),
                lambda: fs._pipe_file(f"{bucket}/during", b"x"),
                lambda: fs._ls(bucket, refresh=True),
            ):
                started = time.monotonic()
                with pytest.raises(EndpointConnectionError):
                    await call()
                assert time.monotonic() - started < 5

            # Only this test's radosgw is down: the cluster's main endpoint still serves.
            async with open_s3fs(rgw_control.cluster.endpoint, **FAIL_FAST) as other:
                assert await other._cat_file(f"{bucket}/before/1") == b"object 1"

            started = time.monotonic()
            await rgw_control.astart()
            assert time.monotonic() - started < 15

            # The same client recovers: its pooled connections to the old process are dropped.
            for path, data in objects.items():
                assert await fs._cat_file(path) == data
            await fs._pipe_file(f"{bucket}/after", b"y", ContentMD5=content_md5(b"y"))
            assert await fs._cat_file(f"{bucket}/after") == b"y"
            assert not await fs._exists(f"{bucket}/during")
        finally:
            await rgw_control.astart()
            await fs._rm(bucket, recursive=True)


def test_rgw_stop_and_start_are_idempotent(rgw_control: RgwControl) -> None:
    rgw_control.stop()
    rgw_control.stop()  # already stopped: nothing to do
    assert refuses(rgw_control.port)
    rgw_control.start()
    rgw_control.start()  # already running: only checks it answers
    assert not refuses(rgw_control.port)


async def test_script_contract(tmp_path: Path) -> None:
    """A cluster of its own (own dir, ports): up twice, status, rgw-stop/start, env, down/up
    keeps data, a killed OSD gets a new cluster with the same credentials, down --purge."""
    state = tmp_path / "rgw"
    port = free_port()
    env = {"EGRESSWATCH_RGW_MON_PORT": str(free_port())}

    async def run(*args: str) -> tuple[int, str, str]:
        done = await asyncio.to_thread(rgw_local, *args, state_dir=state, port=port, env=env)
        return done.returncode, done.stdout, done.stderr

    try:
        rc, first, err = await run("up")
        assert rc == 0, err
        endpoint = parse_s3_env(first)
        assert endpoint.url == f"http://127.0.0.1:{port}"
        assert len(endpoint.access_key) == 20 and len(endpoint.secret_key) == 40
        pids = {p.name: p.read_text() for p in (state / "cluster" / "run").glob("*.pid")}
        assert set(pids) == {"mon.pid", "osd.pid", "rgw.gw.pid"}

        rc, second, err = await run("up")
        assert (rc, second) == (0, first), err  # exactly the same three lines
        assert {p.name: p.read_text() for p in (state / "cluster" / "run").glob("*.pid")} == pids
        rc, again, _ = await run("env")
        assert (rc, again) == (0, first)

        rc, out, _ = await run("status")
        assert rc == 0 and "rgw.gw running" in out, out

        bucket = unique_bucket_name("script")
        async with open_s3fs(endpoint, **FAIL_FAST) as fs:
            await fs._mkdir(bucket)
            await fs._pipe_file(f"{bucket}/kept", b"kept")

        rc, out, err = await run("rgw-stop")
        assert rc == 0 and out == "", err
        assert refuses(port)
        rc, out, _ = await run("status")
        assert rc == 3, out  # partly running
        assert "mon running" in out and "osd running" in out and "rgw.gw stopped" in out
        rc, out, err = await run("rgw-start")
        assert rc == 0 and out == "", err
        rc, _, _ = await run("status")
        assert rc == 0

        # A clean down/up: memstore saved the objects on disk and reads them back.
        rc, out, err = await run("down")
        assert rc == 0 and out == "", err
        rc, out, _ = await run("status")
        assert rc == 1 and "mon stopped" in out, out
        rc, out, err = await run("up")
        assert (rc, out) == (0, first), err
        async with open_s3fs(endpoint, **FAIL_FAST) as fs:
            assert await fs._cat_file(f"{bucket}/kept") == b"kept"

        # A killed OSD loses memstore's objects: up builds a new cluster, same credentials.
        os.kill(int((state / "cluster" / "run" / "osd.pid").read_text()), 9)
        rc, out, err = await run("up")
        assert (rc, out) == (0, first), err
        assert "re-creating the cluster" in err
        async with open_s3fs(endpoint, **FAIL_FAST) as fs:
            assert await fs._ls("", refresh=True) == []
    finally:
        rc, out, err = await run("down", "--purge")
    assert rc == 0 and out == "", err
    rc, out, _ = await run("status")
    assert rc == 1, out
    assert not (state / "cluster").exists()
    assert refuses(port)


async def test_script_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"EGRESSWATCH_RGW_MON_PORT": str(port)}
        done = await asyncio.to_thread(
            rgw_local, "up", state_dir=tmp_path / "rgw", port=free_port(), env=env
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"mon port 127.0.0.1:{port} is in use" in done.stderr
