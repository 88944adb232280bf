"""The sinks' public surface: explicit, sorted, importable; no HTTP framework, no tables."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MODULES = [
    "sinks",
    "sinks.batcher",
    "sinks.config",
    "sinks.errors",
    "sinks.jsonl",
    "sinks.keys",
    "sinks.metrics",
    "sinks.records",
    "sinks.replay",
    "sinks.s3",
    "sinks.spool",
    "sinks.stores",
    "sinks.writer",
]


def isort_style(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=isort_style)
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert hasattr(module, attr), attr


def test_error_tree_has_one_root() -> None:
    from sinks import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.SinkError)


def test_sinks_know_nothing_of_tables_faust_or_web_frameworks() -> None:
    code = (
        "import sys, sinks;"
        "bad = ('tables', 'faust', 'starlette', 'uvicorn', 's3fs');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # s3fs only with sinks.s3
