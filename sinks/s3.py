"""The S3 store (Ceph RGW or any S3), through s3fs: every PUT carries Content-MD5.

How integrity is checked, per PUT:

1. ``Content-MD5`` (base64 of the body's MD5) goes with the request:
   ``await fs._pipe_file(path, data, ContentMD5=...)`` passes its keyword arguments on to
   ``put_object`` (for bodies under s3fs's multipart threshold, which :data:`MAX_PUT_BYTES`
   keeps us under). The server computes the MD5 of what it received and refuses a body
   that differs (``400 BadDigest``): no object is written. That maps to
   :class:`~sinks.errors.ChecksumMismatch`.
2. The ETag of the answer must be that same MD5 in hex (true of a single-part PUT, and
   the server's own statement of what it stored); otherwise ``ChecksumMismatch``.

botocore's own "flexible checksums" are set to ``when_required``: our Content-MD5 is the
checksum, and older RGW releases do not know the ``x-amz-checksum-*`` trailers.
Retries belong to the writer (bounded, counted, breaker-aware), so s3fs and botocore are
told to try each request once, with short connect and read timeouts.

Foreign exceptions are mapped here, once (:func:`map_s3_errors`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any, Final

import aiohttp
import s3fs
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from sinks.errors import (
    ChecksumMismatch,
    NoSuchObject,
    SinkError,
    SinkRejected,
    SinkUnavailable,
)

__all__ = ["MAX_PUT_BYTES", "S3Store", "map_s3_errors", "s3_filesystem"]

MAX_PUT_BYTES: Final = 64 * 2**20
_DIGEST_CODES: Final = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_MISSING_CODES: Final = frozenset({"NoSuchKey", "404"})
_TRANSIENT_STATUS: Final = frozenset({408, 429})


def _client_error(exc: BaseException) -> Any | None:
    """The botocore ``ClientError`` behind ``exc`` (s3fs wraps it in an OSError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError):
            return seen
        seen = seen.__cause__
    return None


def _classify(what: str, exc: BaseException) -> SinkError:
    client_error = _client_error(exc)
    if client_error is not None:
        error = client_error.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(client_error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in _DIGEST_CODES:
            return ChecksumMismatch(what, "the Content-MD5 sent", f"server refused it: {code}")
        if code in _MISSING_CODES:
            return NoSuchObject(what)
        if 400 <= status < 500 and status not in _TRANSIENT_STATUS:
            return SinkRejected(f"{what}: {code or status} {error.get('Message') or ''}".rstrip())
        return SinkUnavailable(f"{what}: {code or status}")
    if isinstance(exc, FileNotFoundError):
        return NoSuchObject(what)
    if isinstance(exc, PermissionError):
        return SinkRejected(f"{what}: {exc}")
    return SinkUnavailable(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def map_s3_errors(what: str) -> Iterator[None]:
    """Raise our :class:`~sinks.errors.SinkError` for anything s3fs, botocore or aiohttp raise."""
    try:
        yield
    except SinkError:
        raise
    except (OSError, TimeoutError, BotoCoreError, ClientError, aiohttp.ClientError) as exc:
        raise _classify(what, exc) from exc


def s3_filesystem(
    endpoint_url: str,
    access_key: str,
    secret_key: str,
    *,
    asynchronous: bool,
    connect_timeout_s: float,
    read_timeout_s: float,
    attempts: int,
    region: str | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> s3fs.S3FileSystem:
    """An ``s3fs.S3FileSystem`` as RGW wants it (path-style addressing), with bounded timeouts
    and tries: botocore makes ``attempts`` tries per request and s3fs adds none of its own.
    No caches: a fresh instance per caller, listings read anew."""
    fs = s3fs.S3FileSystem(
        key=access_key,
        secret=secret_key,
        endpoint_url=endpoint_url,
        asynchronous=asynchronous,
        skip_instance_cache=True,
        use_listings_cache=False,
        client_kwargs={"region_name": region} if region is not None else {},
        config_kwargs={
            "connect_timeout": connect_timeout_s,
            "read_timeout": read_timeout_s,
            "retries": {"total_max_attempts": attempts, "mode": "standard"},
            "s3": {"addressing_style": "path"},
            **(extra_config or {}),
        },
    )
    fs.retries = 1
    return fs


class S3Store:
    """An :class:`~sinks.stores.ObjectStore` on one bucket. Build it with :meth:`open`."""

    def __init__(
        self, fs: s3fs.S3FileSystem, bucket: str, *, client: Any, put_timeout_s: float
    ) -> None:
        self._fs = fs
        self._client = client
        self.bucket = bucket
        self.put_timeout_s = put_timeout_s

    @classmethod
    async def open(
        cls,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        region: str = "us-east-1",
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        put_timeout_s: float = 15.0,
        create_bucket: bool = True,
    ) -> S3Store:
        """Connect (path-style addressing, as RGW wants) and create the bucket if asked."""
        # One try per request: the writer retries, counts and spools.
        fs = s3_filesystem(
            endpoint_url,
            access_key,
            secret_key,
            asynchronous=True,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            attempts=1,
            region=region,
            extra_config={
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            },
        )
        with map_s3_errors(endpoint_url):
            client = await fs.set_session()
        store = cls(fs, bucket, client=client, put_timeout_s=put_timeout_s)
        if create_bucket:
            await store.ensure_bucket()
        return store

    async def ensure_bucket(self) -> None:
        # create_bucket without a LocationConstraint: RGW's default zonegroup takes it as is.
        with map_s3_errors(self.bucket):
            try:
                await self._fs._call_s3("create_bucket", Bucket=self.bucket)
            except FileExistsError:
                pass  # BucketAlreadyExists / BucketAlreadyOwnedByYou

    def content_md5(self, md5: bytes) -> str:
        """The ``Content-MD5`` header value: base64 of the body's binary MD5 ``md5``."""
        return base64.b64encode(md5).decode()

    async def put(self, key: str, data: bytes, md5: bytes | None = None) -> None:
        if len(data) >= MAX_PUT_BYTES:
            raise SinkRejected(f"{key}: {len(data)} bytes is above the single-PUT limit")
        if md5 is None:
            md5 = hashlib.md5(data, usedforsecurity=False).digest()
        content_md5 = self.content_md5(md5)
        expected = md5.hex()  # the same digest: one MD5 per PUT, if any
        with map_s3_errors(key):
            async with asyncio.timeout(self.put_timeout_s):
                response = await self._fs._pipe_file(
                    f"{self.bucket}/{key}", data, ContentMD5=content_md5
                )
        etag = str((response or {}).get("ETag", "")).strip('"')
        if etag != expected:
            raise ChecksumMismatch(key, expected, etag)

    async def get(self, key: str) -> bytes:
        with map_s3_errors(key):
            data = await self._fs._cat_file(f"{self.bucket}/{key}")
        return bytes(data)

    async def list_keys(self, prefix: str = "") -> list[str]:
        # _find lists everything under the deepest folder named in full; filter by prefix.
        folder = prefix.rpartition("/")[0]
        with map_s3_errors(prefix):
            try:
                paths = await self._fs._find(f"{self.bucket}/{folder}".rstrip("/"))
            except FileNotFoundError:
                return []
        head = f"{self.bucket}/"
        keys = (path.removeprefix(head) for path in paths)
        return sorted(key for key in keys if key.startswith(prefix))

    async def close(self) -> None:
        with map_s3_errors("close"):
            await self._client.close()
