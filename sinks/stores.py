"""Object stores: where finished objects go. A ``put`` returns only once the bytes are verified.

Contract of :class:`ObjectStore` (every implementation):

- ``put(key, data, md5=None)`` writes the whole object under ``key``, replacing any object of
  that key, and returns only when the store holds exactly ``data``. ``md5`` is the binary
  MD5 of ``data`` when the caller already took it (the writer does, in its render thread,
  off the event loop); the store takes it otherwise. The check is against that digest: an S3
  store sends ``Content-MD5`` (the server rejects a body that does not match it) and checks
  that the ETag of the answer is the same MD5; a local store re-reads its temporary file
  before renaming it into place.
  Anything else raises a :class:`~sinks.errors.SinkError`: ``ChecksumMismatch``
  (retriable, never acknowledged), ``SinkUnavailable`` (retriable) or ``SinkRejected``.
- ``get(key)`` and ``list_keys(prefix)`` are for readers and tests; ``list_keys`` returns
  the sorted keys that start with ``prefix`` (a string prefix, as S3 has it).

:class:`LocalStore` is the embedded default (no S3 endpoint configured): the same key
layout in a folder, each object written atomically (temporary file, fsync, read back,
rename, fsync of the folder). Its file I/O runs in a thread, off the event loop. The S3
store lives in :mod:`sinks.s3`.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import uuid
from pathlib import Path
from typing import Protocol, runtime_checkable

from sinks._fsync import fsync_dir
from sinks.errors import (
    ChecksumMismatch,
    InvalidKey,
    NoSuchObject,
    SinkRejected,
    SinkUnavailable,
)

__all__ = ["LocalStore", "ObjectStore", "md5_hex", "open_store"]


@runtime_checkable
class ObjectStore(Protocol):
    """Where the sink puts its objects (see the module docstring for the contract)."""

    async def put(self, key: str, data: bytes, md5: bytes | None = None) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def list_keys(self, prefix: str = "") -> list[str]: ...


def md5_hex(data: bytes) -> str:
    """MD5 of ``data`` as lower-case hex: the ETag S3 gives a single-part PUT."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


_REJECTED_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG})


def _map_os_error(key: str, exc: OSError) -> SinkRejected | SinkUnavailable:
    """The local store's boundary: a full or failing disk may recover; permissions will not."""
    if exc.errno in _REJECTED_ERRNOS:
        return SinkRejected(f"{key}: {exc}")
    return SinkUnavailable(f"{key}: {exc}")


class LocalStore:
    """The key layout in a local folder; every put atomic and read back."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path_of(self, key: str) -> Path:
        """The file of ``key``; keys that could leave :attr:`root` are refused."""
        parts = key.split("/")
        if (
            not key
            or "\\" in key
            or "\x00" in key
            or any(part in ("", ".", "..") or part.startswith(".") for part in parts)
        ):
            raise InvalidKey(f"not a safe relative key: {key!r}")
        return self.root.joinpath(*parts)

    async def put(self, key: str, data: bytes, md5: bytes | None = None) -> None:
        path = self.path_of(key)
        try:
            expected, written = await asyncio.to_thread(self._put, path, data, md5)
        except OSError as exc:
            raise _map_os_error(key, exc) from exc
        if written != expected:
            raise ChecksumMismatch(key, expected, written)

    async def get(self, key: str) -> bytes:
        path = self.path_of(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise NoSuchObject(key) from exc
        except OSError as exc:
            raise _map_os_error(key, exc) from exc

    async def list_keys(self, prefix: str = "") -> list[str]:
        try:
            return await asyncio.to_thread(self._list, prefix)
        except OSError as exc:
            raise _map_os_error(prefix, exc) from exc

    def _put(self, path: Path, data: bytes, md5: bytes | None) -> tuple[str, str]:
        """Write, fsync and read back a temporary file, rename it into place if it has the
        expected MD5; (expected, read back) MD5s in hex."""
        expected = md5.hex() if md5 is not None else md5_hex(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "w+b") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
                file.seek(0)
                written = md5_hex(file.read())
            if written == expected:
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return expected, written

    def _list(self, prefix: str) -> list[str]:
        # Walk only the deepest folder the prefix names in full, then filter by string prefix.
        folder = prefix.rpartition("/")[0]
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue  # temporary files of puts in progress (or cut short by a crash)
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)


async def open_store(
    endpoint_url: str | None,
    *,
    access_key: str = "",
    secret_key: str = "",
    bucket: str = "egresswatch",
    local_root: Path | str = "var/sink",
) -> ObjectStore:
    """The S3 store on ``endpoint_url``, or, with none configured, the embedded default: a
    :class:`LocalStore` in ``local_root`` with the same key layout."""
    if not endpoint_url:
        return LocalStore(local_root)
    from sinks.s3 import S3Store  # s3fs is imported only when an endpoint is configured

    return await S3Store.open(endpoint_url, access_key, secret_key, bucket)
