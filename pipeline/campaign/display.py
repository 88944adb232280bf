"""The campaign's live terminal display: phase, time, rates, incidents, running counts.

On a terminal it is a ``rich`` live panel redrawn twice a second; elsewhere (CI logs, a pipe)
one plain line every ``plain_every_s`` seconds, so logs stay readable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.campaign.profile import Plan
from pipeline.campaign.raw import LoadTick

__all__ = ["LiveDisplay", "RunningCounts"]


@dataclass
class RunningCounts:
    """Totals since the start of the run, folded from the load generator's ticks."""

    started: int = 0
    completed: int = 0
    dropped: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    retries: int = 0
    breaker_open: int = 0
    last: LoadTick | None = None
    achieved: list[tuple[float, int]] = field(default_factory=list)
    """(tick end, calls started) of the last five ticks."""

    def add(self, tick: LoadTick) -> None:
        self.started += tick.started
        self.completed += tick.completed
        self.dropped += tick.dropped
        self.ok += tick.ok
        self.errors += tick.errors
        self.timeouts += tick.timeouts
        self.retries += tick.retries
        self.breaker_open += tick.breaker_open
        self.last = tick
        self.achieved = [*self.achieved[-4:], (tick.t, tick.started)]


class LiveDisplay:
    """``with LiveDisplay(plan, console) as d: d.update(t0, counts, status)``."""

    def __init__(self, plan: Plan, console: Console, *, plain_every_s: float = 10.0) -> None:
        self.plan = plan
        self.console = console
        self.plain_every_s = plain_every_s
        self._live: Live | None = None
        self._last_plain = 0.0

    def __enter__(self) -> Self:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(et, e, tb)
            self._live = None

    def message(self, text: str) -> None:
        self.console.print(text)

    def update(self, t0: float | None, counts: RunningCounts, status: dict[str, str]) -> None:
        now = time.time()
        if self._live is not None:
            self._live.update(self._table(t0, now, counts, status))
        elif now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            self.console.print(self._line(t0, now, counts, status), highlight=False)

    def _clock(self, t0: float | None, now: float) -> tuple[str, float, float]:
        if t0 is None:
            return "starting", 0.0, self.plan.total_s
        elapsed = max(0.0, now - t0)
        return self.plan.phase_at(elapsed), elapsed, max(0.0, self.plan.total_s - elapsed)

    def _active(self, elapsed: float) -> str:
        names = [
            f"{i.kind} {i.route}" if i.route else i.kind
            for i in self.plan.active_incidents(elapsed)
        ]
        return ", ".join(names) or "none"

    def _achieved(self, counts: RunningCounts) -> float:
        """Calls started per second over the ticks of the last five seconds."""
        recent = [n for t, n in counts.achieved if t >= time.time() - 5.5]
        return sum(recent) / len(recent) if recent else 0.0

    def _table(
        self, t0: float | None, now: float, counts: RunningCounts, status: dict[str, str]
    ) -> Table:
        phase, elapsed, remaining = self._clock(t0, now)
        table = Table(
            title=f"egresswatch campaign: {self.plan.name}"
            + (" (quick)" if self.plan.quick else ""),
            show_header=False,
        )
        table.add_column(style="bold")
        table.add_column()
        table.add_row("phase", phase)
        table.add_row("elapsed / remaining", f"{elapsed:6.0f} s / {remaining:6.0f} s")
        table.add_row(
            "rate target / achieved",
            f"{self.plan.rate_at(elapsed):6.0f} / {self._achieved(counts):6.0f} calls/s",
        )
        table.add_row("active incidents", self._active(elapsed) if t0 else "none")
        table.add_row(
            "calls",
            f"started {counts.started}  completed {counts.completed}  dropped {counts.dropped}",
        )
        table.add_row(
            "outcomes",
            f"ok {counts.ok}  errors {counts.errors}  timeouts {counts.timeouts}  "
            f"retries {counts.retries}  breaker-open {counts.breaker_open}",
        )
        last = counts.last
        if last is not None:
            p99 = f"{last.p99_ms:.1f} ms" if last.p99_ms is not None else "-"
            table.add_row("caller p99 (last s)", p99)
            emitter = last.emitter
            table.add_row(
                "emitter",
                f"queue {emitter.get('queue_depth', 0)}  sent {emitter.get('sent_events', 0)}  "
                f"dropped {sum(v for k, v in emitter.items() if k.startswith('dropped'))}",
            )
        for key, value in status.items():
            table.add_row(key, value)
        return table

    def _line(
        self, t0: float | None, now: float, counts: RunningCounts, status: dict[str, str]
    ) -> str:
        phase, elapsed, remaining = self._clock(t0, now)
        return (
            f"[{elapsed:5.0f}s -{remaining:4.0f}s] {phase:<7} "
            f"rate {self.plan.rate_at(elapsed):.0f}/{self._achieved(counts):.0f}/s "
            f"calls {counts.started} done {counts.completed} dropped {counts.dropped} "
            f"err {counts.errors} timeouts {counts.timeouts} retries {counts.retries} "
            f"incidents: {self._active(elapsed) if t0 else 'none'} "
            + " ".join(f"{k}={v}" for k, v in status.items())
        )
