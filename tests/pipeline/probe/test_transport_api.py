"""The probe's public surface: a sorted ``__all__``, a light import, the one-liner."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

import pipeline.probe
from pipeline.probe import MemorySink, ProbeConfig, ProbeTransport, SyncProbeTransport, Timeouts


def test_all_is_sorted_and_importable() -> None:
    names = pipeline.probe.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(pipeline.probe, name) is not None


def test_import_stays_light() -> None:
    code = (
        "import sys, pipeline.probe; "
        "heavy = {'faust', 'pyarrow', 's3fs', 'starlette', 'uvicorn'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ProbeConfig(service="bad service")
    with pytest.raises(ValueError):
        ProbeConfig(service="svc", route_templates=("no-slash",))
    with pytest.raises(ValueError):
        ProbeConfig(service="svc", route_templates="/a")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ProbeConfig(service="svc", max_routes_per_upstream=0)
    with pytest.raises(ValueError):
        Timeouts(read=0)
    config = ProbeConfig(service="svc", route_templates=["/a/{id}"])  # type: ignore[arg-type]
    assert config.route_templates == ("/a/{id}",)
    assert hash(config)  # frozen and hashable


def test_timeouts_capped_by_total() -> None:
    assert Timeouts(connect=5, read=None, write=1, pool=5, total=2).as_extension() == {
        "connect": 2,
        "read": 2,
        "write": 1,
        "pool": 2,
    }


def test_one_liners() -> None:
    sink = MemorySink()
    client = httpx.AsyncClient(transport=ProbeTransport(ProbeConfig(service="checkout"), sink))
    assert isinstance(client._transport, ProbeTransport)
    with SyncProbeTransport.client("checkout", sink) as sync_client:
        assert isinstance(sync_client._transport, SyncProbeTransport)
