"""Offline replay: the stored events of one service and one time range, from RGW or a folder.

::

    source = ReplaySource.s3(endpoint, access_key, secret_key, bucket="egresswatch")
    # or ReplaySource.local("var/sink")
    result = replay(source, service="checkout", since=t1, until=t2)
    result.table          # pyarrow.Table, EVENT_SCHEMA, sorted by (started_at, request_id)
    write_jsonl(result.table, out) / write_parquet(result.table, "out.parquet")

Contract of :func:`replay`: exactly the events of ``events/`` objects whose ``service`` is
``service`` and ``since <= started_at < until``, one per ``request_id`` (an event stored twice,
in one object or several, comes out once), sorted by ``started_at`` then ``request_id``.

Partition pruning: one listing of the service's folder gives its ``date=`` folders; of the
days of the range that exist, each whole UTC day is listed with one ``date=`` prefix, each
partial day (the first and the last) hour by hour. Only the objects of the range's hours are
read: nothing outside those folders is opened. Each object is one fragment of a
``pyarrow.dataset`` JSON dataset with an explicit schema (gzip by the ``.gz`` extension),
read whole with one GET, fragments in parallel.

Errors: :class:`InvalidRange` and :class:`UnknownService` for bad arguments,
:class:`DamagedObject` for an object of the range that does not parse, and for storage
failures the sink's own ``SinkUnavailable`` (unreachable, timeout; retriable) or
``SinkRejected`` (credentials, no such bucket or folder), mapped once, in :class:`ReplaySource`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from pipeline.schema import ProbeEvent, encode_event, event_from_dict
from sinks.errors import InvalidKey, NoSuchObject, SinkError, SinkRejected, SinkUnavailable
from sinks.keys import (
    END_OF_9999,
    Kind,
    check_prefix,
    escape_service,
    hour_folder,
    hour_of,
    parse_key,
    unescape_service,
)

__all__ = [
    "EVENT_SCHEMA",
    "DamagedObject",
    "InvalidRange",
    "Replay",
    "ReplayError",
    "ReplaySource",
    "UnknownService",
    "parse_instant",
    "range_folders",
    "replay",
    "stored_keys",
    "write_jsonl",
    "write_parquet",
]

_T = TypeVar("_T")
_R = TypeVar("_R")
DAY: Final = 86_400


def _f(name: str, kind: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, kind, nullable=nullable)


EVENT_SCHEMA: Final = pa.schema(
    [
        _f("schema_version", pa.int8()),
        _f("service", pa.string()),
        _f("started_at", pa.float64()),
        _f("elapsed_ms", pa.float64()),
        _f("method", pa.string()),
        _f("route", pa.string()),
        _f("upstream", pa.string()),
        _f("outcome", pa.string()),
        _f("severity", pa.string()),
        _f("trace_id", pa.string()),
        _f("request_id", pa.string()),
        _f("logical_request_id", pa.string()),
        _f("attempt", pa.int32()),
        _f("status_code", pa.int32(), nullable=True),
        _f("bytes_sent", pa.int64()),
        _f("bytes_received", pa.int64()),
        _f("body_complete", pa.bool_()),
        _f("error_class", pa.string(), nullable=True),
        _f("internal_ip", pa.string(), nullable=True),
        _f("external_ip", pa.string(), nullable=True),
        _f("breaker_state", pa.string(), nullable=True),
        _f("pool_wait_ms", pa.float64(), nullable=True),
        _f("connect_ms", pa.float64(), nullable=True),
        _f("tls_ms", pa.float64(), nullable=True),
        _f("ttfb_ms", pa.float64(), nullable=True),
        _f("transfer_ms", pa.float64(), nullable=True),
    ]
)
"""One column per ``ProbeEvent`` field, in its order; nullable exactly where the field is
optional. ``encode_event`` writes every field, so a line without a non-nullable one is damage."""

_FORMAT: Final = ds.JsonFileFormat(parse_options=pajson.ParseOptions(explicit_schema=EVENT_SCHEMA))


class ReplayError(SinkError):
    """Root of the replay's own errors (storage failures are the sink's ``SinkError`` types)."""


class InvalidRange(ReplayError, ValueError):
    """``since`` is not before ``until``, a time has no time zone, or is out of bounds."""


class UnknownService(ReplayError):
    """No ``service=<service>`` folder at all under ``<prefix>/events/``."""

    def __init__(self, service: str, known: list[str], where: str) -> None:
        if known:
            shown = ", ".join(known[:10]) + (f" (and {len(known) - 10} more)" if known[10:] else "")
            message = f"no service {service!r} under {where}; known services: {shown}"
        else:
            message = f"no service {service!r}: no events at all under {where}"
        super().__init__(message)
        self.service = service
        self.known = known


class DamagedObject(ReplayError):
    """An object of the range does not parse: bad JSON, bad gzip, a field missing or mistyped."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"damaged object {key}: {reason}")
        self.key = key
        self.reason = reason


# ----------------------------------------------------------------------------- the source


@contextlib.contextmanager
def _map_local_errors(what: str) -> Iterator[None]:
    """The local folder's boundary: ``OSError`` onto the sink's error tree."""
    try:
        yield
    except FileNotFoundError as exc:
        raise NoSuchObject(f"{what}: no such file") from exc
    except PermissionError as exc:
        raise SinkRejected(f"{what}: {exc.strerror or exc}") from exc
    except OSError as exc:
        raise SinkUnavailable(f"{what}: {exc.strerror or exc}") from exc


class ReplaySource:
    """Where the sink's objects are read from: an fsspec filesystem, a root, the key prefix.

    ``root`` is the bucket (S3) or the folder (``LocalStore.root``); a key ``k`` is the path
    ``<root>/<k>``. ``errors(what)`` maps the filesystem's exceptions onto ``SinkError``.
    Build one with :meth:`local` or :meth:`s3`; tests may pass any fsspec filesystem.
    """

    def __init__(
        self,
        fs: AbstractFileSystem,
        root: str,
        *,
        prefix: str = "egresswatch",
        errors: Callable[[str], AbstractContextManager[None]] = _map_local_errors,
        name: str | None = None,
    ) -> None:
        check_prefix(prefix)  # raises InvalidKey
        self.fs = fs
        self.root = root.rstrip("/")
        self.prefix = prefix
        self.errors = errors
        self.name = name or self.root

    @classmethod
    def local(cls, root: Path | str, *, prefix: str = "egresswatch") -> ReplaySource:
        """A folder written by ``sinks.stores.LocalStore`` (e.g. ``var/sink``)."""
        from fsspec.implementations.local import LocalFileSystem

        path = Path(root).resolve()
        return cls(LocalFileSystem(), path.as_posix(), prefix=prefix, name=str(path))

    @classmethod
    def s3(
        cls,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        bucket: str = "egresswatch",
        *,
        prefix: str = "egresswatch",
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        attempts: int = 2,
    ) -> ReplaySource:
        """A bucket on S3 / Ceph RGW through s3fs (path-style), bounded timeouts and tries:
        an endpoint that refuses connections fails in about a second."""
        from sinks.s3 import map_s3_errors, s3_filesystem

        fs = s3_filesystem(
            endpoint_url,
            access_key,
            secret_key,
            asynchronous=False,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            attempts=attempts,
        )
        name = f"s3://{bucket} at {endpoint_url}"
        return cls(fs, bucket, prefix=prefix, errors=map_s3_errors, name=name)

    def __str__(self) -> str:
        return self.name

    def path_of(self, key: str) -> str:
        return f"{self.root}/{key}"

    def services(self, kind: str = "events") -> list[str]:
        """The services with a folder under ``<prefix>/<kind>/``, sorted."""
        escaped = self._subfolders(f"{self.prefix}/{kind}/", "service=")
        if escaped is None:
            with self.errors(self.name):
                try:
                    self.fs.ls(self.root, detail=False)
                except FileNotFoundError as exc:
                    raise SinkRejected(f"{self.name}: no such bucket or folder") from exc
            return []
        found = []
        for segment in escaped:
            with contextlib.suppress(InvalidKey):
                found.append(unescape_service(segment))
        return sorted(found)

    def dates(self, service: str, kind: str = "events") -> set[str]:
        """The ``YYYY-MM-DD`` of the ``date=`` folders of one service."""
        folder = f"{self.prefix}/{kind}/service={escape_service(service)}/"
        return set(self._subfolders(folder, "date=") or ())

    def _subfolders(self, folder: str, label: str) -> list[str] | None:
        """``v`` of each ``<label>v`` entry right under ``folder``; None if it is missing."""
        with self.errors(f"{self.name}: {folder}"):
            try:
                entries = self.fs.ls(self.path_of(folder).rstrip("/"), detail=False)
            except FileNotFoundError:
                return None
        names = (str(entry).rstrip("/").rpartition("/")[2] for entry in entries)
        return [name.removeprefix(label) for name in names if name.startswith(label)]

    def list_objects(self, folder: str) -> dict[str, int]:
        """Every object under the key prefix ``folder`` (ending in ``/``), with its size.

        Files only: when its listing comes back empty, s3fs's ``find()`` falls back to
        ``info()`` on the prefix, which names the folder itself (as a directory) if the
        sink's first object lands under it in between.
        """
        with self.errors(f"{self.name}: {folder}"):
            found = self.fs.find(self.path_of(folder), detail=True)
        head = f"{self.root}/"
        return {
            str(path).removeprefix(head): int(info["size"])
            for path, info in found.items()
            if info.get("type") == "file"
        }

    def read(self, key: str) -> bytes:
        """The whole object, with one GET."""
        with self.errors(f"{self.name}: {key}"):
            return bytes(self.fs.cat_file(self.path_of(key)))

    @cached_property
    def filesystem(self) -> pafs.PyFileSystem:
        """The pyarrow view of this source the dataset reads through (whole-object reads)."""
        return pafs.PyFileSystem(_WholeObjects(self))


class _WholeObjects(pafs.FSSpecHandler):  # type: ignore[misc]
    """Opens an object with one mapped GET instead of fsspec's stat + ranged reads."""

    def __init__(self, source: ReplaySource) -> None:
        super().__init__(source.fs)
        self.source = source

    def _open(self, path: str) -> pa.BufferReader:
        key = path.removeprefix(f"{self.source.root}/")
        return pa.BufferReader(self.source.read(key))

    def open_input_file(self, path: str) -> pa.BufferReader:
        return self._open(path)

    def open_input_stream(self, path: str) -> pa.BufferReader:
        return self._open(path)


# ------------------------------------------------------------------------------ the replay


@dataclass(frozen=True)
class Replay:
    """What :func:`replay` found: the events and how they were found."""

    table: pa.Table
    """``EVENT_SCHEMA``; deduplicated by ``request_id``, sorted by (started_at, request_id)."""
    objects: tuple[str, ...]
    """The keys that were read (every object of the range's folders)."""
    duplicates: int
    """Events of the range dropped because their ``request_id`` was already there."""
    ignored: tuple[str, ...] = ()
    """Keys in the range's folders outside the key convention (not read)."""

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def events(self) -> Iterator[ProbeEvent]:
        """The rows as validated ``ProbeEvent`` values (raises ``InvalidEvent``)."""
        for batch in self.table.to_batches(max_chunksize=4096):
            for row in batch.to_pylist():
                yield event_from_dict(row)


def parse_instant(text: str) -> datetime:
    """``2026-11-29T10:00:00Z`` (ISO 8601; no offset means UTC) or epoch seconds."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds != seconds or not 0 <= seconds < END_OF_9999:
            raise InvalidRange(f"epoch seconds out of range: {text!r}")
        return datetime.fromtimestamp(seconds, UTC)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRange(
            f"not an ISO 8601 time or epoch seconds: {text!r} (e.g. 2026-11-29T10:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds(name: str, value: datetime | float) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidRange(f"{name} has no time zone: {value.isoformat()} (use UTC)")
        value = value.timestamp()
    seconds = float(value)
    if not 0 <= seconds < END_OF_9999:
        raise InvalidRange(f"{name} out of range: {seconds}")
    return seconds


def range_folders(
    prefix: str,
    service: str,
    since: float,
    until: float,
    dates: Container[str] | None = None,
    *,
    kind: Kind = "events",
) -> list[str]:
    """The listing prefixes of ``[since, until)``: each whole UTC day as one ``date=`` folder,
    the hours of a partial day (the first and last) as ``hour=`` folders; only the days in
    ``dates`` (``YYYY-MM-DD``) when it is given. ``kind``: ``events`` or ``alerts``."""
    first, last = hour_of(since), hour_of(math.ceil(until) - 1)  # hours h <= last: h < until
    folders: list[str] = []
    for day in range(first - first % DAY, last + 1, DAY):
        head = hour_folder(prefix, kind, service, day).removesuffix("hour=00/")
        if dates is not None and head.rsplit("=", 1)[1].rstrip("/") not in dates:
            continue
        hours = range(max(first, day), min(last, day + DAY - 3600) + 1, 3600)
        if len(hours) == 24:
            folders.append(head)
        else:
            folders.extend(hour_folder(prefix, kind, service, hour) for hour in hours)
    return folders


def stored_keys(
    source: ReplaySource,
    kind: Kind,
    services: Sequence[str],
    start: float,
    end: float,
    *,
    workers: int,
) -> tuple[list[str], list[str]]:
    """The non-empty objects of ``kind`` for ``services`` in ``[start, end)``, sorted, and the
    keys listed there that do not follow the key convention (ignored)."""
    folders: list[str] = []
    for service in services:
        dates = source.dates(service, kind)
        folders += range_folders(source.prefix, service, start, end, dates, kind=kind)
    listed: dict[str, int] = {}
    for found in _in_threads(source.list_objects, folders, workers):
        listed.update(found)
    keys, ignored = [], []
    for key, size in sorted(listed.items()):
        if key.rpartition("/")[2].startswith("."):
            continue  # LocalStore's temporary files of puts in progress
        try:
            parsed = parse_key(key)
        except InvalidKey:
            ignored.append(key)
            continue
        in_range = parsed.service in services and hour_of(start) <= parsed.hour < end
        if in_range and parsed.kind == kind and parsed.prefix == source.prefix and size:
            keys.append(key)
    return keys, ignored


def _in_threads(fn: Callable[[_T], _R], items: Iterable[_T], workers: int) -> list[_R]:
    """``[fn(item) ...]`` in order, ``workers`` at a time; the first error cancels the rest."""
    items = list(items)
    if len(items) <= 1:
        return [fn(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)))
    try:
        futures = [pool.submit(fn, item) for item in items]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _read(source: ReplaySource, fragment: Any) -> pa.Table:
    key = str(fragment.path).removeprefix(f"{source.root}/")
    try:
        table: pa.Table = fragment.to_table(schema=EVENT_SCHEMA)
    except SinkError:
        raise  # the source's mapped storage failure
    except (pa.ArrowException, OSError, ValueError) as exc:  # JSON, gzip or type errors
        raise DamagedObject(key, str(exc)) from exc
    for field in EVENT_SCHEMA:
        if not field.nullable and (missing := table.column(field.name).null_count):
            raise DamagedObject(key, f"{missing} line(s) without {field.name!r}")
    return table


def _dedup_sorted(table: pa.Table) -> pa.Table:
    """One row per request_id (the earliest; on a tie the first read), by (started_at, id)."""
    if table.num_rows > 1:
        by_id = table.take(
            pc.sort_indices(table, [("request_id", "ascending"), ("started_at", "ascending")])
        )
        ids = by_id.column("request_id").combine_chunks()
        first = pa.concat_arrays([pa.array([True]), pc.not_equal(ids[1:], ids[:-1])])
        table = by_id.filter(first)
    order = pc.sort_indices(table, [("started_at", "ascending"), ("request_id", "ascending")])
    return table.take(order)


def replay(
    source: ReplaySource,
    *,
    service: str,
    since: datetime | float,
    until: datetime | float,
    workers: int = 16,
) -> Replay:
    """The stored events of ``service`` with ``since <= started_at < until`` (see the module
    docstring). Times are aware datetimes or epoch seconds.

    Raises :class:`InvalidRange`, :class:`UnknownService`, :class:`DamagedObject`, or the
    sink's ``SinkUnavailable`` / ``SinkRejected`` when the source cannot be listed or read.
    """
    start, end = _seconds("since", since), _seconds("until", until)
    if start >= end:
        raise InvalidRange(f"since must be before until: {since} >= {until}")
    escape_service(service)  # InvalidKey for an empty name
    known = source.services("events")
    if service not in known:
        raise UnknownService(service, known, f"{source}/{source.prefix}/events/")

    keys, ignored = stored_keys(source, "events", [service], start, end, workers=workers)

    tables: list[pa.Table] = []
    if keys:
        dataset = ds.FileSystemDataset.from_paths(
            [source.path_of(key) for key in keys],
            schema=EVENT_SCHEMA,
            format=_FORMAT,
            filesystem=source.filesystem,
        )
        tables = _in_threads(partial(_read, source), dataset.get_fragments(), workers)
    wanted = (pc.field("service") == service) & (pc.field("started_at") >= start)
    wanted &= pc.field("started_at") < end
    table = pa.concat_tables(tables).filter(wanted) if tables else EVENT_SCHEMA.empty_table()
    unique = _dedup_sorted(table)
    return Replay(unique, tuple(keys), table.num_rows - unique.num_rows, tuple(ignored))


# ------------------------------------------------------------------------------ output


def write_jsonl(table: pa.Table, out: IO[bytes]) -> int:
    """One ``encode_event`` line per row (each validated as a ``ProbeEvent``); the count."""
    count = 0
    for batch in table.to_batches(max_chunksize=4096):
        lines = [encode_event(event_from_dict(row)) for row in batch.to_pylist()]
        if lines:
            out.write(b"\n".join(lines) + b"\n")
        count += len(lines)
    return count


def write_parquet(table: pa.Table, out: str | os.PathLike[str] | IO[bytes]) -> None:
    """The table as one Parquet file (zstd), schema as :data:`EVENT_SCHEMA`."""
    pq.write_table(table, out, compression="zstd")
