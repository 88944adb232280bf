"""Digest and OpenSSH signature of report.json: a real key, the real ssh-keygen and sha256sum."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.campaign import signing
from pipeline.campaign.signing import MissingFileError, SigningError, sign, verify, write_digest


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "report.json").write_text('{"overall": "pass"}\n')
    return folder


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "id_ed25519"
    path.parent.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sre@example", "-f", str(path)],
        check=True,
    )
    return path


def allowed_signers_for(key: Path, principal: str) -> Path:
    public = key.with_suffix(".pub").read_text().split()
    path = key.parent / "allowed_signers"
    path.write_text(f'{principal} namespaces="{signing.NAMESPACE}" {public[0]} {public[1]}\n')
    return path


def fingerprint_of(key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(key.with_suffix(".pub"))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def test_digest_is_sha256sum_format_and_sha256sum_accepts_it(run_dir: Path) -> None:
    path = write_digest(run_dir)
    assert path == run_dir / "report.json.sha256"
    text = path.read_text()
    assert text.endswith("  report.json\n") and len(text.split()[0]) == 64
    done = subprocess.run(
        ["sha256sum", "-c", path.name], cwd=run_dir, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "report.json: OK" in done.stdout


def test_unsigned_report_verifies_on_its_digest_alone(run_dir: Path) -> None:
    write_digest(run_dir)
    result = verify(run_dir)
    assert result.ok and result.digest_ok
    assert result.signature == "absent"
    assert any("not signed" in m for m in result.messages)
    assert result.lines()[-1] == "verify: OK"


def test_sign_then_verify_against_allowed_signers(run_dir: Path, key: Path) -> None:
    write_digest(run_dir)
    sig = sign(run_dir, key)
    assert sig == run_dir / "report.json.sig"
    assert sig.read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    allowed = allowed_signers_for(key, "sre@example")

    named = verify(run_dir, allowed_signers=allowed, identity="sre@example")
    assert named.ok and named.signature == "valid", named.messages
    assert named.principal == "sre@example"
    assert named.fingerprint == fingerprint_of(key)

    found = verify(run_dir, allowed_signers=allowed, identity=None)
    assert found.ok and found.principal == "sre@example", found.messages

    # The signature checks with ssh-keygen alone, as the docs tell a reader to do.
    with (run_dir / "report.json").open("rb") as data:
        done = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "sre@example"]
            + ["-n", "egresswatch-campaign", "-s", str(sig)],
            stdin=data,
            capture_output=True,
        )
    assert done.returncode == 0, done.stderr


def test_without_allowed_signers_the_key_is_named_but_not_trusted(run_dir: Path, key: Path) -> None:
    write_digest(run_dir)
    sign(run_dir, key)
    result = verify(run_dir)
    assert result.ok and result.signature == "untrusted"
    assert result.fingerprint == fingerprint_of(key)
    assert any("NOT checked against a trusted key" in m for m in result.messages)


def test_tampered_report_fails_digest_and_signature(run_dir: Path, key: Path) -> None:
    write_digest(run_dir)
    sign(run_dir, key)
    allowed = allowed_signers_for(key, "sre@example")
    expected = (run_dir / "report.json.sha256").read_text().split()[0]
    (run_dir / "report.json").write_text('{"overall": "fail"}\n')

    result = verify(run_dir, allowed_signers=allowed, identity="sre@example")
    assert not result.ok
    assert not result.digest_ok
    assert result.signature == "invalid"
    mismatch = next(m for m in result.messages if m.startswith("digest:"))
    assert "MISMATCH" in mismatch and expected in mismatch
    assert signing.sha256_file(run_dir / "report.json") in mismatch

    assert result.lines()[-1] == "verify: FAILED"
    untrusted = verify(run_dir)
    assert not untrusted.ok and untrusted.signature == "invalid"
    done = subprocess.run(["sha256sum", "-c", "report.json.sha256"], cwd=run_dir)
    assert done.returncode != 0


def test_a_signature_from_an_unlisted_key_is_invalid(run_dir: Path, key: Path, tmp_path: Path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    write_digest(run_dir)
    sign(run_dir, other)
    allowed = allowed_signers_for(key, "sre@example")
    assert verify(run_dir, allowed_signers=allowed, identity="sre@example").signature == "invalid"
    assert verify(run_dir, allowed_signers=allowed).signature == "invalid"


def test_missing_files_are_named(run_dir: Path, key: Path, tmp_path: Path) -> None:
    result = verify(run_dir)
    assert not result.ok
    assert any("report.json.sha256 is missing" in m for m in result.messages)

    write_digest(run_dir)
    missing_sig = verify(run_dir, allowed_signers=allowed_signers_for(key, "sre@example"))
    assert not missing_sig.ok and missing_sig.signature == "missing"
    assert any("report.json.sig is missing" in m for m in missing_sig.messages)

    with pytest.raises(MissingFileError, match="no-such-key: missing"):
        sign(run_dir, tmp_path / "no-such-key")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SigningError, match=r"report\.json: missing"):
        write_digest(empty)
    with pytest.raises(SigningError, match=r"report\.json: missing"):
        verify(empty)


def test_a_garbled_digest_file_is_reported(run_dir: Path) -> None:
    (run_dir / "report.json.sha256").write_text("not a digest\n")
    result = verify(run_dir)
    assert not result.digest_ok
    assert any("is not one" in m for m in result.messages)


def test_resigning_replaces_the_signature(run_dir: Path, key: Path) -> None:
    first = sign(run_dir, key).read_text()
    (run_dir / "report.json").write_text('{"overall": "unknown"}\n')
    write_digest(run_dir)
    second = sign(run_dir, key).read_text()
    assert first != second
    assert verify(run_dir).signature == "untrusted"


def test_a_key_ssh_keygen_refuses_raises_a_tool_error(run_dir: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_text("not a key\n")
    with pytest.raises(signing.SignatureToolError, match="ssh-keygen -Y sign"):
        sign(run_dir, bogus)
