"""A service that only wants the probe stays light: no Faust, pyarrow, s3fs or worker code."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("faust", "mode", "pyarrow", "s3fs", "ddsketch", "prometheus_client", "starlette")


def test_importing_the_probe_and_emitter_imports_no_worker_dependency() -> None:
    code = (
        "import sys, pipeline.probe, pipeline.probe.emitter;"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}));"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
