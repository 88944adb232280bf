"""The wheel as a user gets it: built from the sources, installed in a clean venv outside the
repo, the probe alone (no Faust, pyarrow or s3fs), then ``[worker]``, whose ``egresswatch
worker`` runs against the real test broker until ``/v1/health/ready`` answers 200.

Dependencies come from PyPI once and are kept as wheels in ``.cache/wheels`` (git-ignored):
later runs install offline from there (``--no-index``), and fill the cache again only when an
offline install fails (new or changed dependencies).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port
from tests.workers import REPO, Topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WHEEL_CACHE = REPO / ".cache" / "wheels"
SOURCES = ("pipeline", "agents", "tables", "sinks", "api", "pyproject.toml", "README.md")
HEAVY = ("faust", "mode", "pyarrow", "s3fs", "ddsketch", "prometheus_client", "starlette")


def _run(
    *args: str | Path,
    timeout: float = 300,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy of the sources (no build/ or egg-info left in the checkout)."""
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".mypy_cache")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", out, src)  # fmt: skip
    (wheel,) = out.glob("egresswatch-*.whl")
    return wheel


def _install(python: Path, requirement: str) -> None:
    """Offline from the wheel cache; on a miss, fill the cache from PyPI and try again."""
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    offline = [*pip, "--python", python, "install", "-q", "--no-compile", "--no-index"]
    offline += ["--find-links", WHEEL_CACHE]
    done = subprocess.run(
        [str(a) for a in [*offline, requirement]], capture_output=True, text=True, timeout=600
    )
    if done.returncode == 0:
        return
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", WHEEL_CACHE, requirement,
         timeout=900)  # fmt: skip
    for own in WHEEL_CACHE.glob("egresswatch-*.whl"):
        own.unlink()  # the cache holds dependencies; the wheel under test comes from its URL
    _run(*offline, requirement, timeout=600)


def _py(python: Path, code: str, cwd: Path) -> str:
    return _run(python, "-c", code, cwd=cwd, env=_clean_env()).strip()


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """No PYTHONPATH, no EGRESSWATCH_* of the caller: what a new user's shell has."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **(extra or {})}


def test_wheel_installs_and_runs_a_worker(tmp_path: Path, kafka_bootstrap: str) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tables/defaults/slo-rules.toml" in names
    assert {"api/static/dashboard.html", "api/static/dashboard.js"} <= names
    assert not any(name.startswith(("tests/", "config/", "bench/")) for name in names)

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    away = tmp_path / "elsewhere"  # cwd outside the repo: nothing found by accident
    away.mkdir()

    # The probe alone: the worker's dependencies are not even installed.
    _install(python, str(wheel))
    heavy = _py(
        python,
        "import importlib.util as u, sys, pipeline.probe, pipeline.probe.emitter;"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})),"
        "u.find_spec('faust') is None, pipeline.probe.__file__)",
        away,
    )
    assert heavy.startswith("[] True " + str(venv)), heavy

    _install(python, f"egresswatch[worker] @ {wheel.as_uri()}")
    assert _run(venv / "bin" / "egresswatch", "--version", cwd=away).startswith("egresswatch")
    _run_worker(venv, away, kafka_bootstrap)


def _run_worker(venv: Path, cwd: Path, bootstrap: str) -> None:
    port = free_port()
    log = cwd / "worker.log"
    env = _clean_env({**Topics().env(), "EGRESSWATCH_APP_ID": f"wheel-{uuid.uuid4().hex[:8]}"})
    args = [str(venv / "bin" / "egresswatch"), "worker", "--bootstrap", bootstrap]
    args += ["--http-port", str(port)]  # data dir: the default var/worker, under cwd
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"{base}/v1/health/ready", timeout=2).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        tail = log.read_text(errors="replace")[-4000:]
        assert status == 200, f"not ready (exit {proc.poll()}): {tail}"
        page = httpx.get(f"{base}/", timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert (cwd / "var" / "worker").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, log.read_text(errors="replace")[-4000:]
