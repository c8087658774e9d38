"""Plots as inline SVG text, drawn by matplotlib without pyplot.

Figures are made with ``matplotlib.figure.Figure`` directly, so no global
backend is chosen and no display is needed. Text stays ``<text>`` (not glyph
paths) and every figure gets its own id salt (its title): many SVGs share one HTML page,
and ids that clip paths and markers refer to must not collide.

Axes never use matplotlib's offset or scientific notation ("1e7" in a corner
is easy to miss): times are divided into ns, µs, ms or s and counts into
thousands, millions or billions, with the unit in the axis label.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullLocator

from cxlrig.results.model import Access, Mark, Measurement, Phase, SeriesPoint

log = logging.getLogger(__name__)

#: One colour per kernel variant or node, readable on white and for most colour blindness.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")
BEFORE, AFTER, NEUTRAL = "#d55e00", "#009e73", "#7f7f7f"

#: A series longer than this is drawn with neighbouring intervals merged.
MAX_POINTS = 600

UNIT_LABEL = {"insn": "guest instructions", "ns": "guest time (ns)"}

#: Largest first: a value is shown in the largest unit it reaches.
TIME_UNITS = ((1e9, "s"), (1e6, "ms"), (1e3, "µs"), (1.0, "ns"))
COUNT_UNITS = ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands"), (1.0, ""))
#: A quantity measured in nanoseconds names "ns" as a word ("ns per page", "time (ns)").
_NS = re.compile(r"\bns\b")


def _largest(values: Iterable[float | None]) -> float:
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    return max(finite, default=0.0)


def _pick(units: Sequence[tuple[float, str]], values: Iterable[float | None]) -> tuple[float, str]:
    top = _largest(values)
    return next(((d, name) for d, name in units if top >= d), units[-1])


def time_unit(values_ns: Iterable[float | None]) -> tuple[float, str]:
    """``(divisor, unit)`` to show times given in ns: ``[1e7]`` gives ``(1e6, "ms")``."""
    return _pick(TIME_UNITS, values_ns)


def count_unit(values: Iterable[float | None]) -> tuple[float, str]:
    """``(divisor, word)`` to show counts: ``[4.3e9]`` gives ``(1e9, "billions")``,
    small counts ``(1.0, "")``."""
    return _pick(COUNT_UNITS, values)


def scaled_label(name: str, values: Iterable[float | None]) -> tuple[float, str]:
    """``(divisor, label)`` for an axis named ``name`` holding ``values``.

    A time in ns gets the unit that suits its size in place of "ns"
    ("ns per page" of 1e7 becomes "ms per page"); anything else is a count,
    divided by thousands or more when large ("accesses (thousands)").
    """
    if _NS.search(name):
        divisor, unit = time_unit(values)
        return divisor, _NS.sub(unit, name, count=1)
    divisor, word = count_unit(values)
    return divisor, f"{name} ({word})" if word else name


def _plain(ax: Axes, axis: Literal["x", "y", "both"]) -> None:
    """No offset ("+1e7") and no scientific multiplier on ``axis`` of ``ax``."""
    ax.ticklabel_format(axis=axis, style="plain", useOffset=False)


def _svg(fig: Figure, salt: str) -> str:
    """``fig`` as an ``<svg>`` element; ``salt`` (unique within a page) seeds its ids."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        # No date: the same results render to the same page.
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    # Drop the XML prolog and DOCTYPE: inside HTML only the <svg> element is wanted;
    # and the RDF metadata, whose only content is namespace addresses.
    start = text.find("<svg")
    svg = text[start:] if start >= 0 else text
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, count=1, flags=re.S)
    # matplotlib names every element (figure_1, axes_1, ...), the same in each figure;
    # an HTML page may hold an id once, so keep only the ids something refers to.
    used = set(re.findall(r'url\(#([^)"\s]+)\)|href="#([^"]+)"', svg))
    wanted = {name for pair in used for name in pair if name}
    svg = re.sub(r'\sid="([^"]*)"', lambda m: m.group(0) if m.group(1) in wanted else "", svg)
    return svg.replace("<svg", '<svg class="plot" role="img"', 1)


def natural_width_px(svg: str) -> float | None:
    """The width matplotlib gave an SVG, in CSS pixels (it writes points)."""
    m = re.search(r'<svg[^>]*?\swidth="([0-9.]+)pt"', svg)
    return float(m.group(1)) * 4 / 3 if m else None


def _figure(width: float = 5.6, height: float = 3.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    fig.set_facecolor("white")
    return fig


@dataclass(frozen=True)
class Line:
    """One line of a measurement plot: the runs of one variant (or scenario and variant)."""

    label: str
    points: Sequence[Measurement]


def coarsen(points: Sequence[SeriesPoint], most: int) -> Sequence[SeriesPoint]:
    """At most ``most`` points: neighbours merged, their accesses added up.

    A long run samples thousands of intervals, more than a plot can show and
    heavy in an SVG; merging keeps the totals (so the areas) right.
    """
    if len(points) <= most:
        return points
    size = -(-len(points) // most)
    out = []
    for i in range(0, len(points), size):
        group = points[i : i + size]
        nodes: dict[int, Access] = {}
        for p in group:
            for n, c in p.nodes.items():
                old = nodes.get(n, Access(0, 0))
                nodes[n] = Access(old.reads + c.reads, old.writes + c.writes)
        out.append(SeriesPoint(t=group[-1].t, unit=group[-1].unit, nodes=nodes))
    return out


def accesses_over_time(series: Sequence[SeriesPoint], marks: Sequence[Mark],
                       title: str) -> str:
    """Accesses per node per interval, one line per node, phase marks as vertical lines."""
    unit = series[0].unit
    points: Sequence[SeriesPoint] = [p for p in series if p.unit == unit]
    if len(points) != len(series):
        log.warning("%s: %d series points in another unit than %r left out",
                    title, len(series) - len(points), unit)
    points = coarsen(points, MAX_POINTS)
    nodes = sorted({n for p in points for n in p.nodes})
    counts = {node: [p.nodes[node].total if node in p.nodes else 0 for p in points]
              for node in nodes}
    ts = [p.t for p in points]
    x_div, x_label = scaled_label(UNIT_LABEL.get(unit, unit), [*ts, *(m.t for m in marks)])
    y_div, y_label = scaled_label("accesses per interval",
                                  [v for ys in counts.values() for v in ys])
    fig = _figure()
    ax = fig.add_subplot()
    for colour, node in zip(itertools.cycle(PALETTE), nodes, strict=False):
        ax.plot([t / x_div for t in ts], [v / y_div for v in counts[node]], color=colour,
                linewidth=1.4, label=f"node {node}")
    for mark in marks:
        ax.axvline(mark.t / x_div, color=NEUTRAL, linestyle="--", linewidth=1)
        ax.annotate(mark.name, xy=(mark.t / x_div, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -3), textcoords="offset points", va="top", fontsize=8,
                    color="#333333")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    _plain(ax, "both")
    ax.grid(True, alpha=0.3)
    if nodes:
        ax.legend(fontsize=8, loc="best")
    return _svg(fig, title)


def dram_share(phases: Sequence[Phase], promoted_after: Iterable[str | None],
               title: str) -> str:
    """DRAM's share of node accesses per phase, bars coloured before/after promotion.

    ``promoted_after`` holds the names of the phases that ended after the
    promotion; every other phase counts as before it. Phases without a share
    are left out by the caller.
    """
    after = set(promoted_after)
    fig = _figure(width=max(3.6, 0.9 * len(phases) + 2.0))
    ax = fig.add_subplot()
    labels = [p.name or "(open)" for p in phases]
    shares = [100.0 * (p.dram_share or 0.0) for p in phases]
    colours = [AFTER if p.name in after else BEFORE for p in phases] if after \
        else [NEUTRAL] * len(phases)
    bars = ax.bar(range(len(phases)), shares, color=colours, width=0.6)
    ax.bar_label(bars, labels=[f"{s:.1f} %" for s in shares], fontsize=8, padding=2)
    ax.set_xticks(range(len(phases)), labels)
    # Headroom above 100 % for the bar labels and the legend.
    ax.set_ylim(0, 128)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("DRAM share of accesses (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    if after:
        ax.legend(handles=[Patch(color=BEFORE, label="before promotion"),
                           Patch(color=AFTER, label="after promotion")],
                  fontsize=8, loc="upper center", ncols=2, frameon=False)
    return _svg(fig, title)


@dataclass(frozen=True)
class Scale:
    """How a measurement plot shows ``y``: divided by ``divisor``, labelled ``label``,
    from ``low`` to ``high`` (in shown units; None: matplotlib chooses the top, 0 the
    bottom)."""

    divisor: float = 1.0
    label: str = "y"
    low: float | None = None
    high: float | None = None


def _values(lines: Iterable[Line]) -> list[float]:
    """Every y a plot draws: the medians and the ends of the error bars."""
    return [v for line in lines for m in line.points for v in (m.y, m.min, m.max)
            if v is not None and math.isfinite(v)]


def y_scale(groups: Iterable[Sequence[Line]]) -> Scale:
    """One scale for plots of one quantity, so that plots side by side compare by eye."""
    groups = list(groups)
    first = next((m for lines in groups for line in lines for m in line.points), None)
    name = first.y_name if first is not None else "y"
    values = [v for lines in groups for v in _values(lines)]
    divisor, label = scaled_label(name, values)
    if not values:
        return Scale(divisor, label)
    low, high = min(0.0, min(values) / divisor), max(0.0, max(values) / divisor)
    if high == low:
        high = low + 1.0
    # Up to a round tick above the largest value, with some room for the caps.
    top = high * 1.04
    ticks = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(low, top)
    return Scale(divisor, label, low, max(float(ticks[-1]), top))


def y_scales(series: Mapping[str, Sequence[Line]]) -> dict[str, Scale]:
    """A scale per series, shared by the series of the same quantity (``y_name``)."""
    quantity = {name: next((m.y_name for line in lines for m in line.points), "y")
                for name, lines in series.items()}
    shared = {q: y_scale(lines for name, lines in series.items() if quantity[name] == q)
              for q in dict.fromkeys(quantity.values())}
    return {name: shared[quantity[name]] for name in series}


def measurement_figure(series: str, lines: Sequence[Line], scale: Scale | None = None) -> Figure:
    """The figure :func:`measurements` draws (for tests to look at its axes)."""
    scale = scale or y_scale([lines])
    fig = _figure()
    ax = fig.add_subplot()
    xs_all = [m.x for line in lines for m in line.points]
    div = scale.divisor
    for colour, line in zip(itertools.cycle(PALETTE), lines, strict=False):
        pts = sorted(line.points, key=lambda m: m.x)
        xs = [m.x for m in pts]
        # A value the runner could not read is a gap in the line (NaN), not a zero.
        ys = [math.nan if m.y is None else m.y / div for m in pts]
        low = [(m.y - m.min) / div if m.y is not None and m.min is not None else 0.0
               for m in pts]
        high = [(m.max - m.y) / div if m.y is not None and m.max is not None else 0.0
                for m in pts]
        ax.errorbar(xs, ys, yerr=[low, high], color=colour, marker="o", markersize=4,
                    capsize=3, linewidth=1.4, label=line.label)
    # Counts such as pages or mappers usually grow by powers of two.
    if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 16:
        ax.set_xscale("log", base=2)
        ticks = sorted(set(xs_all))
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        _plain(ax, "x")
    _plain(ax, "y")
    first = next((m for line in lines for m in line.points), None)
    ax.set_xlabel(first.x_name if first is not None else "x")
    ax.set_ylabel(scale.label)
    if scale.high is not None:
        ax.set_ylim(scale.low or 0.0, scale.high)
    else:
        ax.set_ylim(bottom=0)
    ax.set_title(series, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def measurements(series: str, lines: Sequence[Line], scale: Scale | None = None) -> str:
    """``y`` against ``x`` for one series, a line per variant, min-max as error bars.

    Without ``scale`` the series is scaled on its own; :func:`measurement_set`
    gives plots of the same quantity one scale.
    """
    return _svg(measurement_figure(series, lines, scale), series)


def measurement_set(series: Mapping[str, Sequence[Line]]) -> list[str]:
    """:func:`measurements` for each series, in order, those of one quantity on one scale."""
    scales = y_scales(series)
    return [measurements(name, lines, scales[name]) for name, lines in series.items()]


@dataclass(frozen=True)
class PolicyLine:
    """One tiering policy over its intervals: the end of each (s) and a share (0..1)."""

    label: str
    times_s: Sequence[float]
    shares: Sequence[float | None]


def tiering_shares(lines: Sequence[PolicyLine], title: str,
                   marks: Sequence[tuple[float, str]] = ()) -> str:
    """DRAM's share of the workload's accesses per interval, one line per policy.

    ``marks`` are vertical lines (time, label), e.g. where the hot set moved.
    """
    fig = _figure(width=6.4, height=3.4)
    ax = fig.add_subplot()
    styles = itertools.cycle(("o", "s", "^", "D", "v", "P", "X"))
    for n, (line, marker) in enumerate(zip(lines, styles, strict=False)):
        points = [(t, 100.0 * s) for t, s in zip(line.times_s, line.shares, strict=True)
                  if s is not None]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker=marker, markersize=4, linewidth=1.5,
                color=PALETTE[n % len(PALETTE)], label=line.label)
    for t, label in marks:
        ax.axvline(t, color=NEUTRAL, linestyle="--", linewidth=1)
        ax.annotate(label, (t, 102), fontsize=8, color=NEUTRAL, ha="center")
    ax.set_ylim(-3, 110)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlim(left=0)
    ax.set_xlabel("workload time at the end of each interval (s)")
    ax.set_ylabel("DRAM share of the workload's accesses (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    _plain(ax, "both")
    ax.legend(fontsize=8, loc="center right")
    return _svg(fig, title)
