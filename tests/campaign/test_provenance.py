"""Provenance: the real git, the real installed packages, the real ceph/prometheus binaries."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.campaign import provenance
from pipeline.campaign.profile import REPO

PROFILE = REPO / "campaigns" / "nominal.toml"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A throwaway git repository with one commit."""
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "-q")
    (folder / "code.py").write_text("x = 1\n")
    git(folder, "add", "code.py")
    git(folder, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return folder


def test_collect_names_commit_dirty_versions_machine_and_profile(repo: Path) -> None:
    facts = provenance.collect(repo, PROFILE, {"kafka": "3.9.2", "ceph": "16.2.15"})
    assert facts["commit"] == git(repo, "rev-parse", "HEAD")
    assert facts["dirty"] is False
    assert "git_error" not in facts
    assert facts["packages"]["egresswatch"] != "not installed"
    for name in ("faust-streaming", "aiokafka", "httpx", "msgspec", "s3fs", "pyarrow"):
        assert facts["packages"][name][0].isdigit(), name
    assert facts["packages"]["hdrhistogram"][0].isdigit()
    assert facts["python"]["version"].startswith("3.")
    assert facts["components"] == {"ceph": "16.2.15", "kafka": "3.9.2"}
    machine = facts["machine"]
    assert machine["cores"] >= 1 and machine["memory_total_bytes"] > 1 << 20
    assert machine["kernel"] and machine["hostname"]
    assert facts["profile_path"] == str(PROFILE)
    assert facts["profile_sha256"] == hashlib.sha256(PROFILE.read_bytes()).hexdigest()
    assert facts["collected_at"] > 0 and facts["collected_at_utc"].endswith("+00:00")
    json.dumps(facts)  # ready for report.json as it is


def test_a_modified_tracked_file_makes_the_tree_dirty(repo: Path) -> None:
    (repo / "untracked.txt").write_text("not code\n")
    assert provenance.collect(repo, PROFILE, {})["dirty"] is False
    (repo / "code.py").write_text("x = 2\n")
    assert provenance.collect(repo, PROFILE, {})["dirty"] is True


def test_no_git_repository_is_recorded_not_raised(tmp_path: Path) -> None:
    facts = provenance.collect(tmp_path, tmp_path / "missing.toml", {})
    assert facts["commit"] is None and facts["dirty"] is None
    assert "git rev-parse failed" in facts["git_error"]
    assert facts["profile_sha256"] is None


def test_no_git_binary_is_recorded_not_raised(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(repo))  # a PATH with no git on it
    facts = provenance.collect(repo, PROFILE, {})
    assert facts["commit"] is None and "git not usable" in facts["git_error"]


def test_kafka_version_reads_the_pom(tmp_path: Path) -> None:
    assert (
        provenance.kafka_version(REPO)
        == subprocess.run(
            [
                "sed",
                "-n",
                r"s:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p",
                "scripts/kafka/pom.xml",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
    )
    assert provenance.kafka_version(tmp_path) == "unknown"
    (tmp_path / "scripts" / "kafka").mkdir(parents=True)
    (tmp_path / "scripts" / "kafka" / "pom.xml").write_text("<project/>")
    assert provenance.kafka_version(tmp_path) == "unknown"


def test_ceph_and_prometheus_versions_come_from_their_binaries() -> None:
    assert shutil.which("ceph") and shutil.which("prometheus")
    assert provenance.ceph_version().startswith("ceph version ")
    assert provenance.prometheus_version().startswith("prometheus, version ")


def test_version_commands_that_fail_give_unknown(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert provenance.ceph_version() == "unknown"
    assert provenance.prometheus_version() == "unknown"
    assert provenance.toxiproxy_version(tmp_path / "server") == "unknown"
    failing = tmp_path / "prometheus"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)
    assert provenance.prometheus_version() == "unknown"


def test_toxiproxy_version_from_the_built_server() -> None:
    # `make setup` builds it; the script only prints the path when it is already built.
    built = subprocess.run(
        [str(REPO / "scripts" / "toxiproxy-build")],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    server = Path(built.stdout.strip())
    assert provenance.toxiproxy_version(server).startswith("toxiproxy-server version")
