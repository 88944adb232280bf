"""Offline replay (sinks/replay.py) against folders in the sink's layout, and its CLI.

The model: replay(service S, [since, until)) is exactly the stored events with service S and
since <= started_at < until, one per request_id, sorted by (started_at, request_id); objects
of hours outside the range are never read.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fsspec.implementations.local import LocalFileSystem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.schema import ProbeEvent, encode_event
from sinks.errors import InvalidKey, SinkRejected
from sinks.jsonl import encode_jsonl
from sinks.keys import ObjectKey, hour_of, parse_key
from sinks.replay import (
    EVENT_SCHEMA,
    DamagedObject,
    InvalidRange,
    ReplaySource,
    UnknownService,
    parse_instant,
    range_folders,
    replay,
    write_jsonl,
    write_parquet,
)
from sinks.stores import LocalStore
from tests.eventgen import make_event
from tests.sinks.conftest import MakeWriter
from tests.sinks.fakes import T0
from tests.strategies import hex16, probe_events

TOPIC = "egresswatch.probe-events.v1"
PREFIX = "egresswatch"
SERVICES = ("checkout", "check", "billing")  # "check" is a string prefix of "checkout"
DAY = 86_400


class CountingFS(LocalFileSystem):  # type: ignore[misc]
    """A local filesystem that remembers which files were read."""

    cachable = False

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []
        self.listed: list[str] = []

    def find(self, path, *args, **kwargs):
        self.listed.append(str(path))
        return super().find(path, *args, **kwargs)

    def cat_file(self, path, start=None, end=None, **kwargs):
        self.read.append(str(path))
        return super().cat_file(path, start=start, end=end, **kwargs)


def counting_source(root: Path) -> tuple[ReplaySource, CountingFS]:
    fs = CountingFS()
    return ReplaySource(fs, root.resolve().as_posix(), prefix=PREFIX), fs


def put(root: Path, key: ObjectKey | str, events: Iterable[ProbeEvent], *, raw: bytes = b"") -> str:
    """Write one object the way LocalStore lays it out (synchronously, no fsync)."""
    name = key.render() if isinstance(key, ObjectKey) else key
    if isinstance(key, ObjectKey):
        raw = raw or encode_jsonl((encode_event(e) for e in events), compress=key.gzip)
    path = root.joinpath(*name.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return name


def obj(service: str, at: float, first_offset: int, *, gz: bool = False, partition: int = 0):
    return ObjectKey(
        "events", service, hour_of(at), TOPIC, partition, first_offset, gzip=gz, prefix=PREFIX
    )


def expected(events: Iterable[ProbeEvent], service: str, since: float, until: float):
    unique = {
        e.request_id: e for e in events if e.service == service and since <= e.started_at < until
    }
    return sorted(unique.values(), key=lambda e: (e.started_at, e.request_id))


def store_batches(
    root: Path, batches: Sequence[Sequence[ProbeEvent]], gz: Sequence[bool]
) -> list[str]:
    """Each batch writes one object per (service, hour) folder, named by its first offset,
    as the sink's batcher does; returns the keys."""
    keys = []
    offset = 0
    for number, batch in enumerate(batches):
        folders: dict[tuple[str, int], list[ProbeEvent]] = {}
        for event in batch:
            folders.setdefault((event.service, hour_of(event.started_at)), []).append(event)
        for (service, hour), events in folders.items():
            keys.append(put(root, obj(service, hour, offset, gz=gz[number % len(gz)]), events))
        offset += len(batch) + 1
    return keys


# ------------------------------------------------------------------ the model, by hypothesis

times = st.one_of(
    st.integers(-2 * DAY, 2 * DAY).map(lambda s: T0 + s),  # whole seconds, hour boundaries
    st.floats(-2 * DAY, 2 * DAY, allow_nan=False).map(lambda s: T0 + s),
    st.sampled_from([T0, T0 - 1, T0 + 3600, T0 - DAY, T0 + 0.25]),  # shared times: id order
)


@st.composite
def stored(draw: st.DrawFn) -> list[list[ProbeEvent]]:
    """Batches of events, some stored twice: in one object, or again by another batch."""
    ids = draw(st.lists(hex16, min_size=1, max_size=40, unique=True))
    events = [
        msgspec.structs.replace(
            draw(probe_events(service=draw(st.sampled_from(SERVICES)))),
            started_at=draw(times),
            request_id=request_id,
        )
        for request_id in ids
    ]
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=4)))
    batches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    batches = [batch for batch in batches if batch]
    for _ in range(draw(st.integers(0, 3))):  # a batch written again, maybe cut elsewhere
        batch = draw(st.sampled_from(batches))
        start = draw(st.integers(0, len(batch) - 1))
        batches.append(batch[start:])
    if draw(st.booleans()):  # an event twice in one object
        batch = draw(st.sampled_from(batches))
        batch.insert(0, batch[-1])
    return batches


ranges = st.tuples(
    st.one_of(times, st.floats(T0 - 3 * DAY, T0 + 3 * DAY)),
    st.one_of(st.floats(0.001, 3600.0), st.integers(1, 4 * DAY).map(float), st.just(float(DAY))),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=stored(),
    gz=st.lists(st.booleans(), min_size=1, max_size=3),
    service=st.sampled_from(SERVICES),
    span=ranges,
)
def test_replay_is_exactly_the_model(batches, gz, service, span) -> None:
    since, width = span
    until = since + width
    events = [event for batch in batches for event in batch]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        keys = store_batches(root, batches, gz)
        source, fs = counting_source(root)
        if service not in {e.service for e in events}:
            with pytest.raises(UnknownService) as caught:
                replay(source, service=service, since=since, until=until)
            assert caught.value.known == sorted({e.service for e in events})
            return
        result = replay(source, service=service, since=since, until=until)

    want = expected(events, service, since, until)
    assert list(result.events()) == want
    in_range_lines = sum(
        1 for e in events if e.service == service and since <= e.started_at < until
    )
    assert result.duplicates == in_range_lines - len(want)
    # Pruning: exactly the objects of this service's hour folders in range were read.
    in_range = sorted(
        key
        for key in keys
        if parse_key(key).service == service and hour_of(since) <= parse_key(key).hour < until
    )
    assert sorted(set(result.objects)) == sorted(set(in_range))
    assert sorted(Path(p).relative_to(root.resolve()).as_posix() for p in fs.read) == sorted(
        set(in_range)
    )


@given(since=st.floats(T0 - 40 * DAY, T0 + 40 * DAY), width=st.floats(0.001, 30.0 * DAY))
def test_range_folders_cover_exactly_the_hours_of_the_range(since: float, width: float) -> None:
    until = since + width
    folders = range_folders(PREFIX, "checkout", since, until)
    covered: list[int] = []
    for folder in folders:
        if "hour=" in folder:
            covered.append(parse_key(f"{folder}{TOPIC}+0+0.jsonl").hour)
        else:  # a whole day
            day = parse_key(f"{folder}hour=00/{TOPIC}+0+0.jsonl").hour
            covered.extend(range(day, day + DAY, 3600))
    hours = []
    hour = hour_of(since)
    while hour < until:
        hours.append(hour)
        hour += 3600
    assert covered == hours
    assert len(folders) <= 2 * 23 + width / DAY + 1  # days are listed once, not 24 times


def test_range_folders_use_day_folders_inside_and_hours_at_the_edges() -> None:
    day = T0 - T0 % DAY  # 2025-11-24T00:00Z
    folders = range_folders(PREFIX, "a b", day - 2 * 3600 + 5, day + DAY + 3600)
    base = "egresswatch/events/service=a%20b"
    assert folders == [
        f"{base}/date=2025-11-23/hour=22/",
        f"{base}/date=2025-11-23/hour=23/",
        f"{base}/date=2025-11-24/",
        f"{base}/date=2025-11-25/hour=00/",
    ]


# --------------------------------------------------------------------- the sink's own output


async def test_replay_of_what_the_sink_writer_stored(tmp_path: Path, make_writer: MakeWriter):
    """Objects written by SinkWriter on a LocalStore, plus one batch written again by a
    second writer from an earlier offset (an overlapping object, as after a lagging commit)."""
    store = LocalStore(tmp_path / "sink")
    events = [
        make_event(service=s, started_at=T0 + n * 611.5, elapsed_ms=10.0, status_code=code)
        for n in range(40)
        for s, code in (("checkout", 500), ("billing", 200))
    ]
    writer = make_writer(the_store=store, min_severity="info", max_records=7)
    for offset in range(0, len(events), 4):
        writer.add_events(TOPIC, 0, offset, events[offset : offset + 4])
    await writer.flush_all()
    again = make_writer(the_store=store, min_severity="info", spool_dir=tmp_path / "spool2")
    again.add_events(TOPIC, 0, 9, events[10:30])  # offset 9: new names, same events
    await again.flush_all()

    since, until = T0 + 1000, T0 + 6 * 3600
    source = ReplaySource.local(tmp_path / "sink")
    result = replay(source, service="checkout", since=since, until=until)
    want = expected(events, "checkout", since, until)
    assert list(result.events()) == want and len(result) == len(want) > 0
    assert result.duplicates == sum(
        1 for e in events[10:30] if e.service == "checkout" and since <= e.started_at < until
    )
    assert result.duplicates > 0
    assert all(parse_key(key).service == "checkout" for key in result.objects)


def test_schema_is_the_probe_event_fields_with_their_optionality() -> None:
    info = msgspec.inspect.type_info(ProbeEvent)
    assert isinstance(info, msgspec.inspect.StructType)
    assert [f.name for f in info.fields] == EVENT_SCHEMA.names
    for field in info.fields:
        optional = isinstance(field.type, msgspec.inspect.UnionType) and any(
            isinstance(t, msgspec.inspect.NoneType) for t in field.type.types
        )
        assert EVENT_SCHEMA.field(field.name).nullable is optional, field.name


# --------------------------------------------------------------------------------- pruning


def test_objects_outside_the_range_are_never_read(tmp_path: Path) -> None:
    inside = make_event(started_at=T0 + 10, elapsed_ms=1.0)
    put(tmp_path, obj("checkout", T0, 0), [inside])
    for at in (T0 - 1, T0 + 3600, T0 - DAY, T0 + DAY):  # neighbours: hours and days
        put(tmp_path, obj("checkout", at, 1).render(), [], raw=b"{not json\n")
    put(tmp_path, obj("check", T0, 2).render(), [], raw=b"{not json\n")  # another service

    source, fs = counting_source(tmp_path)
    result = replay(source, service="checkout", since=T0, until=T0 + 3600)
    assert list(result.events()) == [inside]
    assert [Path(p).name for p in fs.read] == [f"{TOPIC}+0+0.jsonl"]
    folder = obj("checkout", T0, 0).render().rpartition("/")[0]
    assert [Path(p).relative_to(tmp_path.resolve()).as_posix() for p in fs.listed] == [folder]

    # Ten years wide: one listing per day that holds data, none for the days that do not.
    fs.listed.clear()
    with pytest.raises(DamagedObject):
        replay(source, service="checkout", since=T0 - 3650 * DAY, until=T0 + 3650 * DAY)
    assert sorted(Path(p).name for p in fs.listed) == [
        "date=2025-11-23", "date=2025-11-24", "date=2025-11-25"
    ]  # fmt: skip

    with pytest.raises(DamagedObject) as caught:  # the same damage, now in range
        replay(source, service="checkout", since=T0, until=T0 + 3601)
    assert caught.value.key == obj("checkout", T0 + 3600, 1).render()
    assert "JSON parse error" in str(caught.value)


def test_stray_and_temporary_files_are_skipped(tmp_path: Path) -> None:
    event = make_event(started_at=T0 + 1, elapsed_ms=1.0)
    key = put(tmp_path, obj("checkout", T0, 0), [event])
    folder = key.rpartition("/")[0]
    put(tmp_path, f"{folder}/README.txt", [], raw=b"hello")
    put(tmp_path, f"{folder}/.{TOPIC}+0+5.jsonl.1234.tmp", [], raw=b"{half")
    put(tmp_path, obj("checkout", T0, 9).render(), [], raw=b"")  # empty object
    result = replay(ReplaySource.local(tmp_path), service="checkout", since=T0, until=T0 + 60)
    assert list(result.events()) == [event]
    assert result.ignored == (f"{folder}/README.txt",)
    assert result.objects == (key,)


class FolderAsEntryFS(LocalFileSystem):  # type: ignore[misc]
    """``find`` also names the folder itself, as a directory: what s3fs's ``find()`` returns
    when its listing comes back empty and its ``info()`` fallback sees the sink's first
    object land under the prefix in between."""

    cachable = False

    def find(self, path, *args, **kwargs):
        found = super().find(path, *args, **kwargs)
        if kwargs.get("detail"):
            name = str(path).rstrip("/")
            found[name] = {"name": name, "size": 0, "type": "directory"}
        return found


def test_a_folder_named_among_the_objects_is_not_an_object(tmp_path: Path) -> None:
    event = make_event(started_at=T0 + 1, elapsed_ms=1.0)
    key = put(tmp_path, obj("checkout", T0, 0), [event])
    source = ReplaySource(FolderAsEntryFS(), tmp_path.resolve().as_posix(), prefix=PREFIX)
    folder = key.rpartition("/")[0]
    assert source.list_objects(f"{folder}/") == {key: (tmp_path / key).stat().st_size}
    result = replay(source, service="checkout", since=T0, until=T0 + 60)
    assert list(result.events()) == [event]
    assert result.objects == (key,) and result.ignored == ()


# ------------------------------------------------------------------------ damage and errors


@pytest.mark.parametrize(
    ("body", "gz", "reason"),
    [
        (b'{"service":"checkout"\n', False, "JSON parse error"),
        (b"not gzip at all\n", True, "zlib"),
        (b'{"service":"checkout","started_at":1764000001.0}\n', False, "line(s) without"),
        (b'{"service":"checkout","started_at":"soon"}\n', False, "started_at"),
    ],
)
def test_a_damaged_object_in_range_is_named(tmp_path: Path, body, gz, reason) -> None:
    put(tmp_path, obj("checkout", T0, 0), [make_event(started_at=T0 + 5, elapsed_ms=1.0)])
    bad = put(tmp_path, obj("checkout", T0, 7, gz=gz).render(), [], raw=body)
    with pytest.raises(DamagedObject) as caught:
        replay(ReplaySource.local(tmp_path), service="checkout", since=T0, until=T0 + 60)
    assert caught.value.key == bad and reason in str(caught.value)


def test_bad_ranges_and_names(tmp_path: Path) -> None:
    put(tmp_path, obj("checkout", T0, 0), [make_event(started_at=T0 + 5, elapsed_ms=1.0)])
    source = ReplaySource.local(tmp_path)
    for since, until in [(T0 + 10, T0), (T0, T0), (-1.0, T0), (T0, 1e12)]:
        with pytest.raises(InvalidRange):
            replay(source, service="checkout", since=since, until=until)
    with pytest.raises(InvalidRange, match="time zone"):
        replay(source, service="checkout", since=datetime(2025, 11, 24), until=T0 + 10)
    with pytest.raises(InvalidKey):
        replay(source, service="", since=T0, until=T0 + 10)
    with pytest.raises(InvalidKey):
        ReplaySource.local(tmp_path, prefix="../up")
    aware = datetime.fromtimestamp(T0, UTC)
    assert len(replay(source, service="checkout", since=aware, until=aware + timedelta(1))) == 1


def test_unknown_service_lists_known_ones(tmp_path: Path) -> None:
    for n, service in enumerate(["checkout", "check", *(f"svc{i:02}" for i in range(12))]):
        put(
            tmp_path,
            obj(service, T0, n),
            [make_event(service=service, started_at=T0, elapsed_ms=1.0)],
        )
    with pytest.raises(UnknownService) as caught:
        replay(ReplaySource.local(tmp_path), service="checkou", since=T0, until=T0 + 1)
    message = str(caught.value)
    assert "no service 'checkou'" in message and "check, checkout, svc00" in message
    assert "(and 4 more)" in message

    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownService, match="no events at all"):
        replay(ReplaySource.local(tmp_path / "empty"), service="x", since=T0, until=T0 + 1)
    with pytest.raises(SinkRejected, match="no such bucket or folder"):
        replay(ReplaySource.local(tmp_path / "missing"), service="x", since=T0, until=T0 + 1)


def test_a_service_with_nothing_in_range_is_empty_not_unknown(tmp_path: Path) -> None:
    put(tmp_path, obj("checkout", T0, 0), [make_event(started_at=T0 + 5, elapsed_ms=1.0)])
    result = replay(ReplaySource.local(tmp_path), service="checkout", since=0, until=T0)
    assert len(result) == 0 and result.objects == () and result.table.schema == EVENT_SCHEMA


# --------------------------------------------------------------------------------- output


def test_jsonl_output_is_the_stored_lines_and_parquet_round_trips(tmp_path: Path) -> None:
    events = [
        make_event(started_at=T0 + n, elapsed_ms=n * 700.0, status_code=503) for n in range(5)
    ]
    put(tmp_path, obj("checkout", T0, 0, gz=True), events[::-1])
    result = replay(ReplaySource.local(tmp_path), service="checkout", since=T0, until=T0 + 60)
    out = io.BytesIO()
    assert write_jsonl(result.table, out) == 5
    assert out.getvalue() == b"".join(encode_event(e) + b"\n" for e in events)
    write_parquet(result.table, tmp_path / "out.parquet")
    assert pq.read_table(tmp_path / "out.parquet").equals(result.table)


def test_lines_as_a_foreign_producer_formatted_them_replay_to_the_same_events(
    tmp_path: Path,
) -> None:
    """The sink stores events as received: key order and spaces may not be ours."""
    events = [make_event(started_at=T0 + n, elapsed_ms=6_000.0) for n in range(3)]
    lines = [
        json.dumps(dict(reversed(msgspec.json.decode(encode_event(e)).items()))).encode()
        for e in events
    ]
    put(tmp_path, obj("checkout", T0, 0).render(), [], raw=encode_jsonl(lines))
    result = replay(ReplaySource.local(tmp_path), service="checkout", since=T0, until=T0 + 60)
    out = io.BytesIO()
    assert write_jsonl(result.table, out) == 3
    assert out.getvalue() == b"".join(encode_event(e) + b"\n" for e in events)  # ours again


def test_parse_instant() -> None:
    t = datetime(2026, 11, 29, 10, tzinfo=UTC)
    assert parse_instant("2026-11-29T10:00:00Z") == t
    assert parse_instant("2026-11-29T10:00:00") == t  # no offset: UTC
    assert parse_instant("2026-11-29T11:00:00+01:00") == t
    assert parse_instant(str(int(t.timestamp()))) == t
    assert parse_instant("1764000000.5").timestamp() == 1764000000.5
    assert parse_instant("2026-11-29") == datetime(2026, 11, 29, tzinfo=UTC)
    assert parse_instant("2026-11-29T11:00:00+01:00").tzinfo == timezone(timedelta(hours=1))
    for bad in ["yesterday", "", "nan", "-5", "2026-13-01"]:
        with pytest.raises(InvalidRange):
            parse_instant(bad)


# ------------------------------------------------------------------------------------ CLI


def run(*args: str, env: dict[str, str | None] | None = None):
    no_s3 = {"EGRESSWATCH_S3_ENDPOINT": None, "EGRESSWATCH_S3_BUCKET": None}
    return CliRunner().invoke(main, ["replay", *args], env={**no_s3, **(env or {})})


def test_cli_replays_a_folder_to_stdout_and_to_parquet(tmp_path: Path) -> None:
    events = [make_event(started_at=T0 + n * 1800, elapsed_ms=5.0) for n in range(6)]
    put(tmp_path, obj("checkout", T0, 0), events[:3])
    put(tmp_path, obj("checkout", T0 + 3600, 3), events[2:])  # events[2] stored twice
    args = ["--source", str(tmp_path), "--service", "checkout"]
    done = run(*args, "--since", "2025-11-24T16:00:00Z", "--until", str(int(T0 + 2 * 3600)))
    assert done.exit_code == 0, done.output
    assert done.stdout.encode() == b"".join(encode_event(e) + b"\n" for e in events[:4])
    assert done.stderr == "replayed 4 events (1 duplicates dropped) from 2 objects\n"

    out = tmp_path / "out.parquet"
    done = run(
        *args,
        "--since",
        str(T0),
        "--until",
        str(T0 + DAY),
        "--format",
        "parquet",
        "--out",
        str(out),
    )
    assert done.exit_code == 0, done.output
    assert pq.read_table(out).column("request_id").to_pylist() == [e.request_id for e in events]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--service", "nope"], 3, "no service 'nope'"),
        (["--service", "checkout", "--until", str(T0 - 10)], 2, "since must be before until"),
        (["--service", "checkout", "--since", "last tuesday"], 2, "not an ISO 8601 time"),
        (["--service", "checkout", "--format", "parquet"], 2, "--format parquet needs --out"),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, extra, code, message) -> None:
    put(tmp_path, obj("checkout", T0, 0), [make_event(started_at=T0, elapsed_ms=1.0)])
    times = {"--since": str(T0), "--until": str(T0 + 60)}
    for flag in ("--since", "--until"):
        if flag in extra:
            times[flag] = extra[extra.index(flag) + 1]
            del extra[extra.index(flag) : extra.index(flag) + 2]
    done = run("--source", str(tmp_path), *extra, *(x for kv in times.items() for x in kv))
    assert done.exit_code == code, done.output
    assert message in done.stderr and done.stdout == ""


def test_cli_damaged_object_exit_5_and_no_partial_file(tmp_path: Path) -> None:
    put(tmp_path, obj("checkout", T0, 0).render(), [], raw=b"{oops\n")
    out = tmp_path / "out.jsonl"
    done = run("--source", str(tmp_path), "--service", "checkout", "--since", str(T0),
               "--until", str(T0 + 60), "--out", str(out))  # fmt: skip
    assert done.exit_code == 5 and "damaged object" in done.stderr
    assert not out.exists()


def test_cli_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    done = run("--source", str(tmp_path / "nope"), "--service", "a", "--since", "0", "--until", "1")
    assert done.exit_code == 2 and "does not exist" in done.stderr


def test_public_surface_and_imports() -> None:
    import subprocess
    import sys

    import sinks.replay

    names = sinks.replay.__all__
    rank = [(0 if n.isupper() else 1 if n[0].isupper() else 2, n) for n in names]
    assert rank == sorted(rank) and all(hasattr(sinks.replay, n) for n in names)
    code = (
        "import sys, pipeline.cli; before = {m.split('.')[0] for m in sys.modules};"
        "import sinks.replay; after = {m.split('.')[0] for m in sys.modules};"
        "print(sorted(before & {'pyarrow', 's3fs'}), sorted(after & {'tables', 'faust', 's3fs'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"  # the CLI loads pyarrow only to replay; s3fs only for S3


def test_every_exit_code_is_documented() -> None:
    from pipeline.cli import REPLAY_EXIT_CODES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "replay.md").read_text()
    for code in REPLAY_EXIT_CODES:
        assert f"\n| {code} |" in doc, code
