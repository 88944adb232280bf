"""replay_alerts and `egresswatch replay --kind alerts` on a local sink folder: the records
of the range (by evaluated_at), one per request_id, pruned listing, damage, exit codes."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from sinks.alert_replay import UnknownAlertService, replay_alerts
from sinks.jsonl import encode_jsonl
from sinks.keys import ObjectKey, hour_of
from sinks.replay import DamagedObject, InvalidRange, ReplaySource
from tables.alerting import AlertRecord, encode_alert
from tests.sinks.fakes import T0, make_alert

DAY = 86_400


def put(root: Path, service: str, hour: float, offset: int, records: list[AlertRecord],
        *, raw: bytes | None = None, gzip: bool = False) -> str:  # fmt: skip
    key = ObjectKey("alerts", service, hour_of(hour), "t.alerts", 0, offset, gzip, "egresswatch")
    path = root / key.render()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = (
        raw if raw is not None else encode_jsonl([encode_alert(r) for r in records], compress=gzip)
    )
    path.write_bytes(body)
    return key.render()


def resolved(record: AlertRecord, at: float) -> AlertRecord:
    return msgspec.structs.replace(
        record, status="resolved", resolved_at=at, evaluated_at=at, request_id=f"{int(at):016x}"
    )


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[AlertRecord]]:
    a = make_alert(1, at=T0 + 10)
    b = make_alert(2, service="search", at=T0 + 20)
    a_done = resolved(a, T0 + 4000)  # the next hour
    put(tmp_path, "checkout", T0, 0, [a])
    put(tmp_path, "checkout", T0 + 4000, 1, [a_done, a], gzip=True)  # a stored twice
    put(tmp_path, "search", T0, 0, [b])
    put(tmp_path, "checkout", T0 - 3 * DAY, 9, [], raw=b"{damage far away\n")
    return tmp_path, [a, b, a_done]


def test_one_service_in_order_without_duplicates(folder) -> None:
    root, (a, _, a_done) = folder
    result = replay_alerts(ReplaySource.local(root), service="checkout", since=T0, until=T0 + DAY)
    assert result.records == (a, a_done)
    assert result.duplicates == 1 and len(result.objects) == 2
    assert [r.status for r in result.records] == ["firing", "resolved"]


def test_every_service_when_none_is_named(folder) -> None:
    root, (a, b, a_done) = folder
    result = replay_alerts(ReplaySource.local(root), service=None, since=T0, until=T0 + DAY)
    assert result.records == (a, b, a_done)


def test_the_range_is_on_evaluated_at(folder) -> None:
    root, (a, b, _) = folder
    result = replay_alerts(ReplaySource.local(root), service=None, since=T0, until=T0 + 3600)
    assert result.records == (a, b)
    result = replay_alerts(ReplaySource.local(root), service=None, since=T0 + 15, until=T0 + 3600)
    assert result.records == (b,)


def test_damage_inside_the_range_fails_and_errors_are_specific(folder) -> None:
    root, _ = folder
    source = ReplaySource.local(root)
    with pytest.raises(UnknownAlertService, match="known services: checkout, search"):
        replay_alerts(source, service="checkou", since=T0, until=T0 + 60)
    with pytest.raises(InvalidRange):
        replay_alerts(source, service=None, since=T0, until=T0)
    put(root, "checkout", T0 + 30, 7, [], raw=b'{"schema_version": 1}\n')
    with pytest.raises(DamagedObject, match="damaged object .*t.alerts\\+0\\+7"):
        replay_alerts(source, service="checkout", since=T0, until=T0 + 60)


def test_no_alerts_at_all(tmp_path: Path) -> None:
    source = ReplaySource.local(tmp_path)
    assert replay_alerts(source, service=None, since=T0, until=T0 + 60).records == ()
    with pytest.raises(UnknownAlertService, match="no alerts at all"):
        replay_alerts(source, service="checkout", since=T0, until=T0 + 60)


def run(*args: str):
    no_s3 = {"EGRESSWATCH_S3_ENDPOINT": None, "EGRESSWATCH_S3_BUCKET": None}
    return CliRunner().invoke(main, ["replay", *args], env=no_s3)


def test_cli_kind_alerts_to_stdout_and_to_a_file(folder) -> None:
    root, (a, b, a_done) = folder
    span = ["--since", "2025-11-24T16:00:00Z", "--until", str(T0 + DAY)]
    done = run("--kind", "alerts", "--source", str(root), *span)
    assert done.exit_code == 0, done.output
    assert done.stdout.encode() == b"".join(encode_alert(r) + b"\n" for r in (a, b, a_done))
    assert done.stderr == "replayed 3 alerts (1 duplicates dropped) from 3 objects\n"
    out = root / "alerts.jsonl"
    done = run("--kind", "alerts", "--source", str(root), "--service", "search", *span,
               "--out", str(out))  # fmt: skip
    assert done.exit_code == 0, done.output
    assert out.read_bytes() == encode_alert(b) + b"\n"


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--kind", "alerts", "--service", "nope"], 3, "no service 'nope'"),
        (["--kind", "alerts", "--format", "parquet", "--out", "x"], 2, "jsonl only"),
        (["--kind", "events"], 2, "--kind events needs --service"),
        (["--kind", "logs"], 2, "'logs' is not one of"),
    ],
)
def test_cli_bad_arguments(folder, extra, code, message) -> None:
    root, _ = folder
    done = run("--source", str(root), "--since", str(T0), "--until", str(T0 + 60), *extra)
    assert done.exit_code == code, done.output
    assert message in done.stderr and done.stdout == ""


def test_cli_damage_exit_5(tmp_path: Path) -> None:
    put(tmp_path, "checkout", T0, 0, [], raw=b"not json\n")
    done = run("--kind", "alerts", "--source", str(tmp_path), "--since", str(T0),
               "--until", str(T0 + 60))  # fmt: skip
    assert done.exit_code == 5 and "damaged object" in done.stderr
