"""Probe cost in CPU instructions: a figure this machine's timing noise cannot move.

``probe_overhead.py`` times real requests; on a shared two-core VM its run-to-run spread
(+-1% of a 0.36 ms request) is as large as what is left to find in the probe. This bench
counts instead: each variant runs in a child process under ``valgrind --tool=cachegrind``,
sending GETs through an httpx client whose httpcore pool is canned (a fixed 200 response,
no socket, no emitter thread): only the client's own code runs, the same every time.
Instructions per request = (instructions of a run of ``large`` requests - those of a run of
``small``) / (``large`` - ``small``): start-up and warm-up cancel out. Quick runs of the
same code read within about +-1,500 instructions of each other, at times up to 2,800 apart
(hash seeds and memory layout differ between runs): compare several runs, not one.

Variants: httpx bare, and httpx through ``ProbeTransport`` (default ``ProbeConfig``: breaker
and retry budget on) whose sink is a ``MemorySink`` (records appended under a lock, as the
Kafka emitter's queue takes them); async and sync. The ratio compared is probe / bare. The
probe's direct path builds httpcore's request and httpx's response without the second
validation httpx's transport runs (``pipeline.probe._direct``), which saves more
instructions than the probe's own code adds: ``probe_constructors`` is the probe with those
constructors put back, so ``probe_constructors_added_instructions_per_req`` is the figure to
watch for regressions of the probe's own code. It
leaves out what only real sockets show (h11 writing the ``traceparent``, the emitter
thread's share of the CPU): ``probe_overhead.py`` measures those.

Also reported, from cachegrind's cache model (32 KB L1 data and instruction caches):
L1 data and instruction misses per request, which cost time beyond the instruction count.

Needs ``valgrind`` (``scripts/setup-system`` installs it). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS: Final = (
    "bare",
    "probe",
    "probe_constructors",
    "bare_sync",
    "probe_sync",
    "probe_constructors_sync",
)
URL: Final = "http://127.0.0.1:8000/v1/items/42"
WARMUP: Final = 300
# valgrind's summary lines, e.g. "==123== I   refs:      1,173,089,850"
_COUNTERS: Final = {
    "instructions": r"I\s+refs",
    "i1_misses": r"I1\s+misses",
    "d1_misses": r"D1\s+misses",
}


# -- the child: one variant, n requests ------------------------------------------------------


def run_child(variant: str, n: int) -> None:
    """Send WARMUP + n GETs through the variant's client (runs under valgrind).

    After the warm-up, ``gc.freeze()`` moves everything alive (modules, classes, the
    clients) out of the collector's reach: a full collection then costs what the requests
    left, not the start-up heap. Without it, whether one full collection more falls among
    the ``large`` run's requests moved the figures by up to 3,000 instructions a request.
    """
    import httpcore
    import httpx

    from pipeline.probe import MemorySink, ProbeConfig, ProbeTransport, SyncProbeTransport

    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]

    class AsyncCannedPool:
        async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
            return httpcore.Response(200, headers=headers, content=body)

        async def aclose(self) -> None:
            return None

    class CannedPool:
        def handle_request(self, request: httpcore.Request) -> httpcore.Response:
            return httpcore.Response(200, headers=headers, content=body)

        def close(self) -> None:
            return None

    probed = variant.startswith("probe")
    if "constructors" in variant:
        use_constructors()
    if variant.endswith("_sync"):
        inner = httpx.HTTPTransport()
        inner._pool = CannedPool()  # type: ignore[assignment]
        transport: httpx.BaseTransport = (
            SyncProbeTransport(ProbeConfig(service="bench"), MemorySink(), transport=inner)
            if probed
            else inner
        )
        client = httpx.Client(transport=transport)  # not entered: the canned pool has no I/O
        for _ in range(WARMUP):
            client.get(URL)
        gc.freeze()  # see the docstring
        for _ in range(n):
            client.get(URL)
        return
    async_inner = httpx.AsyncHTTPTransport()
    async_inner._pool = AsyncCannedPool()  # type: ignore[assignment]
    async_transport: httpx.AsyncBaseTransport = (
        ProbeTransport(ProbeConfig(service="bench"), MemorySink(), transport=async_inner)
        if probed
        else async_inner
    )

    async def requests() -> None:
        client = httpx.AsyncClient(transport=async_transport)
        for _ in range(WARMUP):
            await client.get(URL)
        gc.freeze()  # see the docstring
        for _ in range(n):
            await client.get(URL)

    asyncio.run(requests())


def use_constructors() -> None:
    """Have the probe build httpcore's request and httpx's response with their constructors,
    as httpx's transport does (the ``probe_constructors`` variants): the probe's own code
    alone, without what its direct path saves (``pipeline.probe._direct``)."""
    from pipeline.probe import _direct, transport

    for module in (_direct, transport):
        module.core_request = _direct._public_core_request  # type: ignore[attr-defined]
        module.httpx_response = _direct._public_httpx_response  # type: ignore[attr-defined]


# -- the parent: valgrind runs and their differences -----------------------------------------


def count(variant: str, n: int) -> dict[str, int]:
    """cachegrind's totals for one child run of ``n`` requests."""
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=yes",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        variant,
        str(n),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{variant} x {n}: valgrind exited {done.returncode}:\n{tail}")
    totals: dict[str, int] = {}
    for key, label in _COUNTERS.items():
        match = re.search(rf"{label}:\s+([\d,]+)", done.stderr)
        if match is None:
            raise RuntimeError(f"{variant} x {n}: no {label!r} line in valgrind's output")
        totals[key] = int(match.group(1).replace(",", ""))
    return totals


def per_request(small: int, large: int, jobs: int) -> dict[str, dict[str, int]]:
    """Counters per request of every variant: (large run - small run) / (large - small)."""
    runs = [(variant, n) for variant in VARIANTS for n in (small, large)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        totals = dict(zip(runs, pool.map(lambda run: count(*run), runs), strict=True))
    return {
        variant: {
            key: round(
                (totals[(variant, large)][key] - totals[(variant, small)][key]) / (large - small)
            )
            for key in _COUNTERS
        }
        for variant in VARIANTS
    }


def figures(counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, suffix in (("async", ""), ("sync", "_sync")):
        bare, probe = counts[f"bare{suffix}"], counts[f"probe{suffix}"]
        own = counts[f"probe_constructors{suffix}"]
        prefix = "" if mode == "async" else "sync_"
        out[f"{prefix}bare_instructions_per_req"] = bare["instructions"]
        out[f"{prefix}probe_instructions_per_req"] = probe["instructions"]
        out[f"{prefix}probe_added_instructions_per_req"] = (
            probe["instructions"] - bare["instructions"]
        )
        out[f"{prefix}probe_instructions_ratio"] = round(
            probe["instructions"] / bare["instructions"], 4
        )
        out[f"{prefix}probe_added_d1_misses_per_req"] = probe["d1_misses"] - bare["d1_misses"]
        out[f"{prefix}probe_added_i1_misses_per_req"] = probe["i1_misses"] - bare["i1_misses"]
        out[f"{prefix}probe_constructors_added_instructions_per_req"] = (
            own["instructions"] - bare["instructions"]
        )
    return out


def print_table(counts: dict[str, dict[str, int]]) -> None:
    print(f"{'variant':<24} {'instructions/req':>17} {'vs bare':>9} {'D1 miss':>8} {'I1 miss':>8}")
    for variant in VARIANTS:
        row = counts[variant]
        bare = counts["bare_sync" if variant.endswith("_sync") else "bare"]["instructions"]
        ratio = f"{(row['instructions'] / bare - 1) * 100:+.1f}%"
        print(
            f"{variant:<24} {row['instructions']:>17,} {ratio:>9}"
            f" {row['d1_misses']:>8,} {row['i1_misses']:>8,}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="runs of 300 and 1,300 requests")
    parser.add_argument("--small", type=int, default=500, help="requests of the short run")
    parser.add_argument("--large", type=int, default=2500, help="requests of the long run")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind runs at once")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        variant, n = args.child
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}")
        run_child(variant, int(n))
        return 0
    if shutil.which("valgrind") is None:
        print("probe_instructions: valgrind not found; run scripts/setup-system", file=sys.stderr)
        return 2
    small, large = (300, 1300) if args.quick else (args.small, args.large)
    if not 0 < small < large:
        parser.error("--small must be > 0 and < --large")
    started = time.monotonic()
    counts = per_request(small, large, max(1, args.jobs))
    print_table(counts)
    result = figures(counts) | {
        "requests_small": small,
        "requests_large": large,
        "variants": counts,
        "valgrind": subprocess.run(
            ["valgrind", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "python": sys.version.split()[0],
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
