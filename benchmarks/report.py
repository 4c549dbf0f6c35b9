"""Reports for one benchmark run: a Markdown summary, a PNG chart and the raw JSON.

The input is the results dict the benchmark builds (``schema: 1``): machine and settings,
one entry per scenario with its rounds and a summary of medians and min-max ranges, the
same-run comparisons against their targets, and an optional RSS soak. A partially failed
run may lack any field; every missing value is rendered as "—" instead of raising.

    paths = write_reports(results, Path("bench-out"))   # bench.json, bench.md, bench.png
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import LogFormatter

DASH = "—"  # a missing value
EN_DASH = "\u2013"  # between the ends of a range: 4870 (4700\u20134950)
PERCENTILES = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"))
SCENARIO_HEADER = ("scenario", f"req/s (median, min{EN_DASH}max)", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                   "errors", "server CPU (cores)")
COMPARISON_HEADER = ("comparison", "metric", "value", "target", "met")
FIGSIZE = (13.0, 4.5)
DPI = 110

Stat = tuple[float | None, float | None, float | None]
Panel = Callable[[Axes], None]


# --- reading the results defensively ---------------------------------------------------------

def _get(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...``, or None as soon as a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _num(value: Any) -> float | None:
    """A finite number as float; None for anything else (bools, strings, NaN, None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _stat(value: Any) -> Stat:
    """(median, min, max) of a Stat mapping, each None when absent."""
    return _num(_get(value, "median")), _num(_get(value, "min")), _num(_get(value, "max"))


def _scenarios(results: Mapping[str, Any], group: str | None = None) -> list[Mapping[str, Any]]:
    found = [s for s in _list(results.get("scenarios")) if isinstance(s, Mapping)]
    return found if group is None else [s for s in found if s.get("group") == group]


# --- formatting -------------------------------------------------------------------------------

def _fixed(value: float | None, decimals: int = 2) -> str:
    return DASH if value is None else f"{value:.{decimals}f}"


def _ranged(stat: Stat, decimals: int) -> str:
    """``4870 (4700..4950)`` with an en dash; just the median when the range is unknown."""
    median, low, high = stat
    if median is None:
        return DASH
    if low is None or high is None:
        return _fixed(median, decimals)
    return f"{_fixed(median, decimals)} ({_fixed(low, decimals)}{EN_DASH}{_fixed(high, decimals)})"


def _text(value: Any) -> str:
    """A table-safe rendering of a name or scalar."""
    if value is None or value == "":
        return DASH
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _met(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "**no**"
    return DASH


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return ["_none_"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# --- Markdown ---------------------------------------------------------------------------------

def _heading(results: Mapping[str, Any]) -> list[str]:
    when = f"Run {_text(results.get('when'))}"
    target = results.get("target")
    if target:
        when += f" against `{_text(target)}`"
    else:
        when += " on loopback"
    machine = results.get("machine")
    settings = results.get("settings")
    machine_line = ", ".join(f"{k} {_text(v)}" for k, v in machine.items()) if isinstance(
        machine, Mapping) else DASH
    settings_line = ", ".join(f"{k}={_text(v)}" for k, v in settings.items()) if isinstance(
        settings, Mapping) else DASH
    return ["## extauthz benchmark", "", when + ".", "", f"Machine: {machine_line}.", "",
            f"Settings: {settings_line}."]


def _scenario_row(scenario: Mapping[str, Any]) -> list[str]:
    summary = scenario.get("summary")
    latencies = [_fixed(_stat(_get(summary, key))[0]) for key, _ in PERCENTILES]
    errors = _get(summary, "errors")
    return [_text(scenario.get("name")), _ranged(_stat(_get(summary, "throughput")), 0), *latencies,
            DASH if _num(errors) is None else str(int(errors)),
            _fixed(_stat(_get(summary, "server_cpu_cores"))[0])]


def _comparison_row(comparison: Mapping[str, Any]) -> list[str]:
    stat = (_num(comparison.get("median")), _num(comparison.get("min")), _num(comparison.get("max")))
    return [_text(comparison.get("name")), _text(comparison.get("metric")), _ranged(stat, 2),
            _text(comparison.get("target")), _met(comparison.get("met"))]


def _soak_worker(name: str, first: Any, last: Any, change: Any) -> str:
    start, end = _num(_get(first, name)), _num(_get(last, name))
    fraction = _num(_get(change, name))
    if fraction is None and start and end is not None:
        fraction = (end - start) / start
    percent = DASH if fraction is None else f"{fraction * 100:+.1f}%"
    return f"{name} {_fixed(start, 1)}→{_fixed(end, 1)} MB ({percent})"


def _soak_line(soak: Mapping[str, Any]) -> str:
    samples = [s for s in _list(soak.get("samples")) if isinstance(s, Mapping)]
    settled_at = _num(soak.get("settled_at")) or 0.0  # the caches fill first; flat means after that
    settled = [s for s in samples if (_num(s.get("t")) or 0.0) >= settled_at] or samples
    first = _get(settled[0], "rss_mb") if settled else None
    last = _get(samples[-1], "rss_mb") if samples else None
    change = soak.get("change")
    names = list(dict.fromkeys([*_mapping(change), *_mapping(first), *_mapping(last)]))
    workers = ", ".join(_soak_worker(str(n), first, last, change) for n in names) or DASH
    seconds, rate = _num(soak.get("seconds")), _num(soak.get("rate"))
    tokens = _num(soak.get("tokens"))
    line = (f"RSS over a {DASH if seconds is None else f'{seconds:g}'} s soak at "
            f"{DASH if rate is None else f'{rate:g}'} req/s with "
            f"{DASH if tokens is None else f'{tokens:.0f}'} rotating tokens"
            + (f", from {settled_at:g} s (the caches full) to the end" if settled_at else "")
            + f": {workers}")
    target = soak.get("target")
    if target or soak.get("met") is not None:
        line += f"; target {_text(target)}: {_met(soak.get('met'))}"
    return line


def markdown(results: Mapping[str, Any]) -> str:
    """The run as Markdown: heading, scenario table, comparison table and the soak line."""
    scenario_rows = [_scenario_row(s) for s in _scenarios(results)]
    comparisons = [c for c in _list(results.get("comparisons")) if isinstance(c, Mapping)]
    lines = [*_heading(results), "", "### Scenarios", "", *_table(SCENARIO_HEADER, scenario_rows), "",
             f"### Comparisons (same run, median of rounds, min{EN_DASH}max)", "",
             *_table(COMPARISON_HEADER, [_comparison_row(c) for c in comparisons])]
    soak = results.get("soak")
    if isinstance(soak, Mapping):
        lines += ["", "### Soak", "", _soak_line(soak)]
    return "\n".join(lines) + "\n"


# --- chart ------------------------------------------------------------------------------------

def _positive(value: float | None) -> float:
    """A value a log axis can show; NaN (a gap in the line) otherwise."""
    return value if value is not None and value > 0 else math.nan


def _log_ms(ax: Axes) -> None:
    """A log y axis in ms labelled 0.5, 1, 2 rather than 5 x 10^-1."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter())  # thins minor labels on wide ranges, as the default does
    ax.set_ylabel("ms")


def _percentile_panel(results: Mapping[str, Any]) -> Panel | None:
    lines: list[tuple[str, list[float]]] = []
    for scenario in _scenarios(results, "grpc"):
        summary = scenario.get("summary")
        values = [_positive(_stat(_get(summary, key))[0]) for key, _ in PERCENTILES]
        if any(not math.isnan(v) for v in values):
            lines.append((str(scenario.get("name", DASH)), values))
    if not lines:
        return None

    def draw(ax: Axes) -> None:
        for name, values in lines:
            ax.plot(range(len(PERCENTILES)), values, marker="o", label=name)
        ax.set_xticks(range(len(PERCENTILES)), [label for _, label in PERCENTILES])
        _log_ms(ax)
        ax.set_title("Latency percentiles (gRPC, h2load)")
        ax.legend(fontsize="small")

    return draw


def _offered_rate(scenario: Mapping[str, Any]) -> float | None:
    """The offered req/s: from the runs, else from the name after ``@``."""
    for run in _list(scenario.get("runs")):
        rate = _num(_get(run, "rate"))
        if rate is not None:
            return rate
    _, at, suffix = str(scenario.get("name", "")).partition("@")
    try:
        return float(suffix) if at else None
    except ValueError:
        return None


def _envoy_series(results: Mapping[str, Any]) -> dict[str, list[tuple[float, float, float]]]:
    """series name -> sorted [(rate, p50, p99)] with NaN for a missing percentile."""
    series: dict[str, list[tuple[float, float, float]]] = {}
    for scenario in _scenarios(results, "envoy"):
        rate = _offered_rate(scenario)
        summary = scenario.get("summary")
        p50, p99 = (_positive(_stat(_get(summary, key))[0]) for key in ("p50", "p99"))
        if rate is None or (math.isnan(p50) and math.isnan(p99)):
            continue
        name = str(scenario.get("name", DASH)).partition("@")[0]
        series.setdefault(name, []).append((rate, p50, p99))
    return {name: sorted(points) for name, points in series.items()}


def _envoy_panel(results: Mapping[str, Any]) -> Panel | None:
    series = _envoy_series(results)
    if not series:
        return None

    def draw(ax: Axes) -> None:
        rates: list[float] = []
        for index, (name, points) in enumerate(series.items()):
            xs = [p[0] for p in points]
            rates += xs
            ax.plot(xs, [p[1] for p in points], color=f"C{index}", marker="o", label=f"{name} p50")
            ax.plot(xs, [p[2] for p in points], color=f"C{index}", marker="o", linestyle="--",
                    label=f"{name} p99")
        if min(rates) > 0 and max(rates) / min(rates) >= 20:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(LogFormatter())
        _log_ms(ax)
        ax.set_xlabel("offered req/s")
        ax.set_title("Through Envoy at fixed rates")
        ax.legend(fontsize="small")

    return draw


def _process_count(name: Any) -> int | None:
    try:
        return int(str(name).rsplit("-", 1)[-1])
    except ValueError:
        return None


def _worker_points(results: Mapping[str, Any]) -> list[tuple[int, float, float, float]]:
    """Sorted [(processes, median, below, above)] of throughput; below/above are error-bar lengths."""
    points = []
    for scenario in _scenarios(results, "workers"):
        count = _process_count(scenario.get("name"))
        median, low, high = _stat(_get(scenario, "summary", "throughput"))
        if count is None or median is None:
            continue
        below = max(median - low, 0.0) if low is not None else 0.0
        above = max(high - median, 0.0) if high is not None else 0.0
        points.append((count, median, below, above))
    return sorted(points)


def _workers_panel(results: Mapping[str, Any]) -> Panel | None:
    points = _worker_points(results)
    if not points:
        return None

    def draw(ax: Axes) -> None:
        counts = [p[0] for p in points]
        errors = [[p[2] for p in points], [p[3] for p in points]]
        ax.bar(counts, [p[1] for p in points], width=0.6, yerr=errors, capsize=4, color="C0",
               label=f"median, min{EN_DASH}max")
        single = next((p[1] for p in points if p[0] == 1), None)
        if single is not None:
            ax.plot(counts, [n * single for n in counts], color="C3", linestyle="--", label="linear from 1")
        ax.set_xticks(counts)
        ax.set_xlabel("processes")
        ax.set_ylabel("req/s")
        ax.set_title("Throughput vs workers")
        ax.legend(fontsize="small")

    return draw


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no scenario data", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def chart(results: Mapping[str, Any], path: Path) -> Path:
    """Write the PNG chart (one panel per group that has data) to ``path`` and return it."""
    panels = [p for p in (_percentile_panel(results), _envoy_panel(results), _workers_panel(results)) if p]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=FIGSIZE, squeeze=False, layout="constrained")
    try:
        for ax, draw in zip(axes[0], panels or [_no_data], strict=True):
            draw(ax)
        fig.suptitle(f"extauthz benchmark — {results.get('when') or DASH}")
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path


# --- files ------------------------------------------------------------------------------------

def write_reports(results: Mapping[str, Any], out_dir: Path, stem: str = "bench") -> dict[str, Path]:
    """Write ``{stem}.json``, ``{stem}.md`` and ``{stem}.png`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md",
             "png": out_dir / f"{stem}.png"}
    paths["json"].write_text(json.dumps(dict(results), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(results), encoding="utf-8")
    chart(results, paths["png"])
    return paths
