"""Digest and OpenSSH signature of a campaign report, and their verification.

A run folder's ``report.json`` is the machine-readable verdict; this module seals it:

- ``report.json.sha256`` always, in ``sha256sum`` format (``<hex>  report.json``), so
  ``sha256sum -c report.json.sha256`` checks it without this tool;
- ``report.json.sig`` with a key (``ssh-keygen -Y sign -n egresswatch-campaign``), which
  anyone checks with ``ssh-keygen -Y verify`` and an allowed-signers file.

:func:`verify` always checks the digest, and the signature when there is one: against an
allowed-signers file when given (the only check that says *who* signed), else with
``check-novalidate``, which proves the report was not changed since someone signed it and
names that key's fingerprint, but not that the key is one you trust. A failed check is an
answer (:class:`VerifyResult`), not an exception; :class:`SigningError` is for what stops the
work itself (no report, no key, no ``ssh-keygen``).
"""

from __future__ import annotations

import hashlib
import re
import subprocess  # noqa: S404 - fixed argument lists, no shell
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Literal

__all__ = [
    "DIGEST_NAME",
    "NAMESPACE",
    "REPORT_NAME",
    "SIGNATURE_NAME",
    "MissingFileError",
    "SignatureToolError",
    "SigningError",
    "VerifyResult",
    "sign",
    "verify",
    "write_digest",
]

REPORT_NAME: Final = "report.json"
DIGEST_NAME: Final = "report.json.sha256"
SIGNATURE_NAME: Final = "report.json.sig"
NAMESPACE: Final = "egresswatch-campaign"
"""The ``-n`` namespace: a signature made for something else does not verify as a report's."""

_SSH_KEYGEN_TIMEOUT_S: Final = 120.0  # signing may prompt for a key's passphrase
_DIGEST_LINE: Final = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_FINGERPRINT: Final = re.compile(r"\b(SHA256:[A-Za-z0-9+/=]+)")


class SigningError(Exception):
    """Why a report could not be sealed or checked at all."""


class MissingFileError(SigningError):
    """A file the operation needs is not there; the message names it."""


class SignatureToolError(SigningError):
    """``ssh-keygen`` is missing or refused; the message carries its own words."""


SignatureState = Literal["valid", "untrusted", "invalid", "absent", "missing"]
"""``valid``: verified against an allowed signer; ``untrusted``: intact but made by a key not
checked against any trusted list; ``invalid``: does not verify; ``absent``: the report is not
signed and no one asked for a signature; ``missing``: a signature was asked for (an
allowed-signers file given) but there is none."""


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify`: each check's answer and the words to show a user."""

    digest_ok: bool
    signature: SignatureState
    fingerprint: str | None = None
    principal: str | None = None
    messages: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """The digest matches and the signature, if any (or required), verifies."""
        return self.digest_ok and self.signature in ("valid", "untrusted", "absent")

    def lines(self) -> list[str]:
        """What to print: one line per check, then the outcome."""
        return [*self.messages, "verify: OK" if self.ok else "verify: FAILED"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_digest(run_dir: Path) -> Path:
    """Write ``report.json.sha256`` next to ``report.json``; the path written."""
    report = _existing(run_dir / REPORT_NAME, "nothing to digest")
    target = run_dir / DIGEST_NAME
    partial = run_dir / f".{DIGEST_NAME}.partial"
    partial.write_text(f"{sha256_file(report)}  {REPORT_NAME}\n", encoding="ascii")
    partial.replace(target)
    return target


def sign(run_dir: Path, key: Path) -> Path:
    """Sign ``report.json`` with the OpenSSH private ``key``; the ``report.json.sig`` path."""
    _existing(run_dir / REPORT_NAME, "nothing to sign")
    _existing(key, "no signing key")
    signature = run_dir / SIGNATURE_NAME
    # ssh-keygen will not overwrite an old signature; a re-signed report gets a fresh one.
    signature.unlink(missing_ok=True)
    done = _ssh_keygen(
        ["-Y", "sign", "-f", str(key.resolve()), "-n", NAMESPACE, REPORT_NAME],
        cwd=run_dir,
        stdin=None,
    )
    if done.returncode != 0 or not signature.is_file():
        raise SignatureToolError(
            f"ssh-keygen -Y sign with {key} failed ({done.returncode}): {_said(done)}"
        )
    return signature


def verify(
    run_dir: Path, *, allowed_signers: Path | None = None, identity: str | None = None
) -> VerifyResult:
    """Check the digest, and the signature when one exists or ``allowed_signers`` asks for it.

    Without ``identity``, the principal is looked up in ``allowed_signers`` from the
    signature's key (``ssh-keygen -Y find-principals``).
    """
    report = _existing(run_dir / REPORT_NAME, "nothing to verify")
    messages: list[str] = []
    digest_ok = _check_digest(run_dir, report, messages)

    signature = run_dir / SIGNATURE_NAME
    if not signature.is_file():
        if allowed_signers is not None:
            messages.append(
                f"signature: {signature} is missing (an allowed-signers file was given)"
            )
            return VerifyResult(digest_ok, "missing", messages=tuple(messages))
        messages.append(f"signature: none ({SIGNATURE_NAME} absent): the report is not signed")
        return VerifyResult(digest_ok, "absent", messages=tuple(messages))

    if allowed_signers is None:
        state, fingerprint = _check_novalidate(report, signature, messages)
        return VerifyResult(digest_ok, state, fingerprint, messages=tuple(messages))
    state, fingerprint, principal = _check_trusted(
        report, signature, allowed_signers, identity, messages
    )
    return VerifyResult(digest_ok, state, fingerprint, principal, tuple(messages))


def _check_digest(run_dir: Path, report: Path, messages: list[str]) -> bool:
    digest_file = run_dir / DIGEST_NAME
    if not digest_file.is_file():
        messages.append(f"digest: {digest_file} is missing")
        return False
    lines = [line for line in digest_file.read_text(errors="replace").splitlines() if line]
    entry = _DIGEST_LINE.match(lines[0]) if len(lines) == 1 else None
    if entry is None:
        messages.append(f"digest: {digest_file} is not one '<sha256 hex>  {REPORT_NAME}' line")
        return False
    expected, name = entry.group(1).lower(), entry.group(2)
    if name != REPORT_NAME:
        messages.append(f"digest: {digest_file} names {name!r}, not {REPORT_NAME!r}")
        return False
    actual = sha256_file(report)
    if actual != expected:
        messages.append(
            f"digest: MISMATCH for {report}: expected sha256 {expected}, actual {actual}"
        )
        return False
    messages.append(f"digest: ok (sha256 {actual})")
    return True


def _check_novalidate(
    report: Path, signature: Path, messages: list[str]
) -> tuple[SignatureState, str | None]:
    done = _verify_call(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(signature)], report)
    fingerprint = _fingerprint(done)
    if done.returncode != 0:
        messages.append(f"signature: INVALID ({_said(done)})")
        return "invalid", fingerprint
    messages.append(
        f"signature: intact, made by key {fingerprint or 'of unknown fingerprint'}; NOT checked "
        "against a trusted key (give an allowed-signers file to check who signed)"
    )
    return "untrusted", fingerprint


def _check_trusted(
    report: Path,
    signature: Path,
    allowed_signers: Path,
    identity: str | None,
    messages: list[str],
) -> tuple[SignatureState, str | None, str | None]:
    _existing(allowed_signers, "no allowed-signers file")
    if identity is None:
        found = _ssh_keygen(
            ["-Y", "find-principals", "-f", str(allowed_signers), "-s", str(signature)],
            cwd=None,
            stdin=None,
        )
        principals = found.stdout.split()
        if found.returncode != 0 or not principals:
            messages.append(
                f"signature: INVALID: its key is not in {allowed_signers} ({_said(found)})"
            )
            return "invalid", None, None
        identity = principals[0]
    done = _verify_call(
        [
            "-Y",
            "verify",
            "-f",
            str(allowed_signers),
            "-I",
            identity,
            "-n",
            NAMESPACE,
            "-s",
            str(signature),
        ],
        report,
    )
    fingerprint = _fingerprint(done)
    if done.returncode != 0:
        messages.append(f"signature: INVALID for {identity!r} ({_said(done)})")
        return "invalid", fingerprint, identity
    messages.append(
        f"signature: valid, signed by {identity!r} (key {fingerprint or 'unknown'}) "
        f"per {allowed_signers}"
    )
    return "valid", fingerprint, identity


def _verify_call(args: list[str], report: Path) -> subprocess.CompletedProcess[str]:
    with report.open("rb") as data:
        return _ssh_keygen(args, cwd=None, stdin=data)


def _ssh_keygen(
    args: list[str], *, cwd: Path | None, stdin: IO[bytes] | None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - fixed ssh-keygen arguments, no shell
            ["ssh-keygen", *args],  # noqa: S607 - ssh-keygen from PATH, as a user runs it
            cwd=cwd,
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=_SSH_KEYGEN_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SignatureToolError("ssh-keygen not found (install openssh-client)") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise SignatureToolError(f"ssh-keygen {' '.join(args[:2])} failed: {exc}") from exc


def _existing(path: Path, why: str) -> Path:
    if not path.is_file():
        raise MissingFileError(f"{path}: missing ({why})")
    return path


def _fingerprint(done: subprocess.CompletedProcess[str]) -> str | None:
    found = _FINGERPRINT.search(done.stdout + "\n" + done.stderr)
    return found.group(1) if found else None


def _said(done: subprocess.CompletedProcess[str]) -> str:
    words = " ".join((done.stderr + " " + done.stdout).split())
    return words or f"exit status {done.returncode}"
