"""The report's plots, as inline SVG text made by matplotlib (no pyplot, no display, no network).

Each plot has time on the x axis in seconds from the run's t0, the incidents that ran shaded
and labelled with their ids, and the phase boundaries dotted. A plot with nothing to draw says
"no data" rather than failing. The SVG is deterministic (fixed id salt, no date) and carries
no namespace URLs, metadata or XML prolog: it is meant to sit inside an HTML page that must
not reference anything outside itself.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pipeline.campaign._report_data import Band, RunData
from pipeline.campaign.raw import LoadTick, Sample, WsMessage, read_jsonl

__all__ = ["Plot", "make_plots"]

_BAND_COLOURS: Final = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_WIDE: Final = (9.0, 2.6)
_SVG_NOISE: Final = (
    re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL),
    re.compile(r'\s+xmlns(?::\w+)?="[^"]*"'),
    re.compile(r"<!--.*?-->\s*", re.DOTALL),
)

_ID: Final = re.compile(r'(?<=\s)id="([^"]+)"')
_HREF: Final = re.compile(r'\bhref="#([^"]+)"')
_URL: Final = re.compile(r"url\(#([^)]+)\)")


@dataclass(frozen=True)
class Plot:
    key: str
    title: str
    caption: str
    svg: str


def make_plots(
    run: RunData,
    bands: Sequence[Band],
    marks: Sequence[tuple[str, float]],
    ws_delay_max_s: float | None,
) -> list[Plot]:
    """Every plot of the report, in the order the report shows them."""
    t0 = run.t0
    samples = list(read_jsonl(run.raw_dir / "samples.jsonl", Sample))
    draw = _Drawer(bands, marks)
    ticks = run.ticks
    x = np.array([tick.t - t0 for tick in ticks], dtype=float)

    def series(get: Callable[[LoadTick], float | None]) -> np.ndarray[Any, Any]:
        return np.array([np.nan if (v := get(t)) is None else v for t in ticks], dtype=float)

    plots = [
        draw.lines(
            "latency",
            "Caller latency p50 / p95 / p99 (ms, from the intended start)",
            "Per second, from the load generator; log scale.",
            x,
            {
                "p50": series(lambda t: t.p50_ms),
                "p95": series(lambda t: t.p95_ms),
                "p99": series(lambda t: t.p99_ms),
            },
            log=True,
        ),
        draw.lines(
            "errors",
            "Errors, timeouts, retries, breaker short-circuits, pool waits (per second)",
            "Counts per second as the callers saw them.",
            x,
            {
                name: series(_field(name))
                for name in ("errors", "timeouts", "retries", "breaker_open", "pool_waits")
            },
        ),
        draw.lines(
            "breakers",
            "Circuit breakers not closed (upstreams)",
            "Number of upstreams whose breaker is open or half-open, per second.",
            x,
            {state: series(_breakers_in(state)) for state in ("open", "half_open")},
            step=True,
        ),
        draw.lines(
            "throughput",
            "Throughput: target vs achieved (calls per second)",
            "Target arrival rate, calls started and completed, arrivals dropped "
            "(dropped_iterations: could not start).",
            x,
            {
                "target": series(lambda t: t.target_rate),
                "started": series(lambda t: t.started),
                "completed": series(lambda t: t.completed),
                "dropped": series(lambda t: t.dropped),
            },
        ),
        _rss_plot(draw, samples, t0),
        _queue_plot(draw, samples, t0),
        _ws_plot(draw, run, ws_delay_max_s),
    ]
    return plots


def _field(name: str) -> Callable[[LoadTick], float | None]:
    def get(tick: LoadTick) -> float | None:
        value = getattr(tick, name)
        return None if value is None else float(value)

    return get


def _breakers_in(state: str) -> Callable[[LoadTick], float | None]:
    def count(tick: LoadTick) -> float | None:
        return float(sum(value == state for value in tick.breakers.values()))

    return count


def _rss_plot(draw: _Drawer, samples: list[Sample], t0: float) -> Plot:
    names = sorted({name for s in samples for name in s.processes})
    x = np.array([s.t - t0 for s in samples], dtype=float)
    lines = {
        name: np.array(
            [s.processes.get(name, {}).get("rss_bytes", np.nan) / 2**20 for s in samples],
            dtype=float,
        )
        for name in names
    }
    return draw.lines(
        "rss",
        "Resident memory per process (MiB)",
        "RSS of every process the campaign started or observed, sampled every second (I3).",
        x,
        lines,
    )


def _queue_plot(draw: _Drawer, samples: list[Sample], t0: float) -> Plot:
    names = sorted({name for s in samples for name in s.queues})
    x = np.array([s.t - t0 for s in samples], dtype=float)

    def fill(sample: Sample, name: str) -> float:
        queue = sample.queues.get(name, {})
        cap = queue.get("cap") or 0
        return queue.get("depth", np.nan) / cap if cap > 0 else np.nan

    lines = {name: np.array([fill(s, name) for s in samples], dtype=float) for name in names}
    return draw.lines(
        "queues",
        "Queue depth as a share of its cap",
        "Every bounded queue and buffer (emitter, spool, WebSocket), depth / cap (I3).",
        x,
        lines,
    )


def _ws_plot(draw: _Drawer, run: RunData, ws_delay_max_s: float | None) -> Plot:
    seconds: list[int] = []
    delays: list[float] = []
    for message in read_jsonl(run.raw_dir / "ws.jsonl", WsMessage):
        if message.type == "event" and message.ended_at is not None:
            seconds.append(int(message.received_at - run.t0))
            delays.append(message.received_at - message.ended_at)
    lines: dict[str, np.ndarray[Any, Any]] = {}
    x = np.array([], dtype=float)
    counts = np.array([], dtype=float)
    if delays:
        secs = np.array(seconds)
        values = np.array(delays)
        order = np.argsort(secs, kind="stable")
        secs, values = secs[order], values[order]
        keys, starts, sizes = np.unique(secs, return_index=True, return_counts=True)
        groups = np.split(values, starts[1:])
        x = keys.astype(float) + 1.0  # a second's figures at its end, as the load ticks
        lines = {
            "p50": np.array([np.percentile(g, 50) for g in groups]),
            "p99": np.array([np.percentile(g, 99) for g in groups]),
            "max": np.array([g.max() for g in groups]),
        }
        counts = sizes.astype(float)
    limit = f" Dashed: the {ws_delay_max_s:g} s bound." if ws_delay_max_s else ""
    return draw.lines(
        "ws_delay",
        "Probe to WebSocket delay (s) and events received per second",
        "Received at the client minus the call's end, every event message of every client." + limit,
        x,
        lines,
        threshold=ws_delay_max_s,
        counts=counts,
    )


class _Drawer:
    """Makes one SVG plot at a time with the run's incident bands and phase marks."""

    def __init__(self, bands: Sequence[Band], marks: Sequence[tuple[str, float]]) -> None:
        self.bands = bands
        self.marks = marks

    def lines(
        self,
        key: str,
        title: str,
        caption: str,
        x: np.ndarray[Any, Any],
        lines: dict[str, np.ndarray[Any, Any]],
        *,
        log: bool = False,
        step: bool = False,
        threshold: float | None = None,
        counts: np.ndarray[Any, Any] | None = None,
    ) -> Plot:
        drawn = {name: y for name, y in lines.items() if len(y) and np.isfinite(y).any()}
        with matplotlib.rc_context(
            {
                "svg.hashsalt": "egresswatch-campaign-report",  # stable ids: same data, same bytes
                "svg.fonttype": "none",  # text stays text: smaller, searchable, no embedded glyphs
                "font.size": 8,
                "axes.grid": True,
                "grid.alpha": 0.3,
                "path.simplify": True,
            }
        ):
            if not len(x) or not drawn:
                return Plot(key, title, caption, _svg(_no_data(title), key))
            figure = Figure(figsize=_WIDE, layout="constrained")
            axes = figure.add_subplot()
            for name, y in drawn.items():
                if step:
                    axes.step(x, y, where="post", label=_plain(name), linewidth=1)
                else:
                    axes.plot(x, y, label=_plain(name), linewidth=1)
            if log and all((y[np.isfinite(y)] > 0).all() for y in drawn.values()):
                axes.set_yscale("log")
            else:
                axes.set_ylim(bottom=0)  # every series here counts or measures from 0
            if threshold:
                axes.axhline(threshold, color="black", linestyle="--", linewidth=0.8)
            if counts is not None and len(counts):
                twin = axes.twinx()
                twin.plot(x, counts, color="0.6", linewidth=0.6, label="events/s")
                twin.set_ylabel("events/s", color="0.4")
                twin.grid(False)
                twin.set_ylim(bottom=0)
            self._shade(axes)
            axes.set_title(_plain(title), loc="left")
            axes.set_xlabel("seconds from t0")
            axes.legend(loc="upper right", fontsize=6, ncols=min(len(drawn), 6))
            return Plot(key, title, caption, _svg(figure, key))

    def _shade(self, axes: Axes) -> None:
        where = axes.get_xaxis_transform()  # x in data, y in axes fractions
        for index, band in enumerate(self.bands):
            colour = _BAND_COLOURS[index % len(_BAND_COLOURS)]
            axes.axvspan(band.start_s, band.end_s, color=colour, alpha=0.1, linewidth=0)
            axes.text(
                band.start_s,
                0.97,
                _plain(band.id),
                transform=where,
                rotation=90,
                va="top",
                ha="left",
                fontsize=5.5,
                color=colour,
            )
        for name, at in self.marks:
            axes.axvline(at, color="0.5", linestyle=":", linewidth=0.8)
            axes.text(at, 0.02, f" {_plain(name)}", transform=where, fontsize=5.5, color="0.4")


def _no_data(title: str) -> Figure:
    figure = Figure(figsize=(_WIDE[0], 1.0), layout="constrained")
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_title(_plain(title), loc="left")
    axes.text(0.5, 0.4, "no data", ha="center", va="center", fontsize=11, color="0.4")
    return figure


def _svg(figure: Figure, key: str) -> str:
    """The figure as an ``<svg>`` element for an HTML page, its ids prefixed with ``key``.

    matplotlib names groups ``figure_1``, ``axes_1``...in every figure: prefixed, the plots
    of one page keep distinct ids and each ``href="#..."``/``url(#...)`` finds its own.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    text = text[text.index("<svg") :]
    for noise in _SVG_NOISE:
        text = noise.sub("", text)
    text = text.replace("xlink:href=", "href=")  # SVG 2: no xlink namespace needed
    text = _ID.sub(rf'id="{key}-\1"', text)
    text = _HREF.sub(rf'href="#{key}-\1"', text)
    text = _URL.sub(rf"url(#{key}-\1)", text)
    return text.strip()


def _plain(text: str) -> str:
    """Text matplotlib draws as is: a ``$`` would start math mode."""
    return text.replace("$", r"\$")
