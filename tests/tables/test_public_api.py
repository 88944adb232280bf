"""The public surface of the tables core: explicit, sorted, importable."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["tables", "tables.sketch", "tables.windows", "tables.aggregate", "tables.query"]


def isort_style(name: str) -> tuple[int, str]:
    """The order the project uses (ruff's RUF022): CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=isort_style)
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert hasattr(module, attr), attr


def test_tables_core_knows_nothing_of_kafka_or_http() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tables.query, tables.aggregate;"
        "bad = ('faust', 'aiokafka', 'starlette', 'httpx', 'numpy');"
        "bad = [m for m in bad if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
