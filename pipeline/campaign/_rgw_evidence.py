"""RGW read back twice, for invariant I4: an independent listing and ``egresswatch replay``.

- :func:`read_listing` lists every object under ``<prefix>/`` with aiobotocore directly (not
  through :mod:`sinks.replay`), GETs each, checks ``ETag == md5(body)`` when the ETag is a
  plain MD5, gunzips ``.gz`` objects, and writes one :class:`StoredObject` per object to
  ``rgw_objects.jsonl`` and one :class:`StoredEvent` per line of each ``events/`` object to
  ``rgw_listing.jsonl``. A line that is not a JSON object with string ids becomes a
  StoredEvent with empty ids and severity ``damaged`` (the I2 check names its key); an
  object that does not gunzip is one such row. Alert objects are listed and checked but
  their lines are not events (I4 counts events only).
- :func:`read_replay` runs the real CLI (``python -m pipeline.cli replay``) once per service
  and writes its JSONL output as StoredEvent rows (no key: replay hides it) to
  ``rgw_replay.jsonl``. Exit 3 (no such service) means none stored; any other failure is
  reported in the returned status, with the events read before it.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
import sys
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from pipeline.campaign._jsonl_out import JsonlOut
from pipeline.campaign.raw import StoredEvent, StoredObject

__all__ = ["read_listing", "read_replay"]

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_REPO = Path(__file__).resolve().parents[2]


class _Ids(msgspec.Struct):
    request_id: str
    trace_id: str
    service: str
    severity: str


_ids = msgspec.json.Decoder(_Ids)


def _stored(line: bytes, key: str) -> StoredEvent:
    try:
        ids = _ids.decode(line)
    except msgspec.DecodeError:
        return StoredEvent(request_id="", trace_id="", service="", severity="damaged", key=key)
    return StoredEvent(
        request_id=ids.request_id,
        trace_id=ids.trace_id,
        service=ids.service,
        severity=ids.severity,
        key=key,
    )


def checksum_ok(etag: str, body: bytes) -> bool | None:
    """ETag == MD5 of the body; None when the ETag is not a plain MD5 (multipart, SSE)."""
    tag = etag.strip().strip('"').lower()
    if not _PLAIN_MD5.match(tag):
        return None
    return tag == hashlib.md5(body, usedforsecurity=False).hexdigest()


def _lines(key: str, body: bytes) -> list[StoredEvent]:
    if key.endswith(".gz"):
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error):
            return [_stored(b"", key)]
    return [_stored(line, key) for line in body.split(b"\n") if line.strip()]


async def read_listing(
    endpoint: str, access_key: str, secret_key: str, bucket: str, prefix: str, raw_dir: Path
) -> dict[str, Any]:
    """List and read every object under ``prefix``; returns counts (objects, events, bad)."""
    config = Config(
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=2,
        read_timeout=10,
    )
    root = prefix.strip("/") + "/"
    counts = {"objects": 0, "event_lines": 0, "checksum_failed": 0, "damaged_lines": 0}
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=config,
    ) as s3:
        keys: list[str] = []
        async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        gate = asyncio.Semaphore(8)  # at most 8 objects (each <= 8 MiB) in memory

        async def fetch(key: str) -> tuple[str, bytes, str]:
            async with gate:
                answer = await s3.get_object(Bucket=bucket, Key=key)
                async with answer["Body"] as stream:
                    body = await stream.read()
                return key, body, str(answer.get("ETag", ""))

        with (
            JsonlOut(raw_dir / "rgw_objects.jsonl", mode="replace") as objects,
            JsonlOut(raw_dir / "rgw_listing.jsonl", mode="replace") as listing,
        ):
            for done in asyncio.as_completed([fetch(k) for k in keys]):
                key, body, etag = await done
                is_events = key.startswith(f"{root}events/")
                rows = _lines(key, body)
                ok = checksum_ok(etag, body)
                objects.write(
                    StoredObject(key=key, size=len(body), events=len(rows), checksum_ok=ok)
                )
                counts["objects"] += 1
                counts["checksum_failed"] += ok is False
                if is_events:
                    for row in rows:
                        listing.write(row)
                    counts["event_lines"] += len(rows)
                    counts["damaged_lines"] += sum(r.severity == "damaged" for r in rows)
    return counts


async def read_replay(
    endpoint: str,
    access_key: str,
    secret_key: str,
    bucket: str,
    prefix: str,
    services: Sequence[str],
    since: float,
    until: float,
    raw_dir: Path,
    *,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """``egresswatch replay`` per service; returns each service's exit code, events, error."""
    status: dict[str, Any] = {}
    with JsonlOut(raw_dir / "rgw_replay.jsonl", mode="replace") as out:
        for service in services:
            status[service] = await _replay_one(
                [
                    "--service", service,
                    "--since", f"{since:.3f}",
                    "--until", f"{until:.3f}",
                    "--endpoint", endpoint,
                    "--access-key", access_key,
                    "--secret-key", secret_key,
                    "--bucket", bucket,
                    "--prefix", prefix.strip("/"),
                ],
                out,
                timeout_s,
            )  # fmt: skip
    return status


async def _replay_one(args: list[str], out: JsonlOut, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline.cli", "replay", *args,
            cwd=_REPO, stdout=stdout, stderr=stderr,
        )  # fmt: skip
        try:
            code = await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            code = None
        stdout.seek(0)
        events = 0
        for line in stdout:
            if line.strip():
                row = _stored(line, "")
                out.write(row)
                events += 1
        stderr.seek(0)
        message = stderr.read()[-2000:].decode("utf-8", "replace").strip()
    result: dict[str, Any] = {"exit_code": code, "events": events}
    if code == 3:
        result["note"] = "no such service stored: none"
    elif code != 0:
        result["error"] = message or f"replay timed out after {timeout_s} s"
    return result
