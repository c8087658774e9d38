"""Plots as inline SVG text, drawn by matplotlib without pyplot.

Figures are made with ``matplotlib.figure.Figure`` directly, so no global
backend is chosen and no display is needed. Text stays ``<text>`` (not glyph
paths) and every figure gets its own id salt (its title): many SVGs share one HTML page,
and ids that clip paths and markers refer to must not collide.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from cxlrig.results.model import Access, Mark, Measurement, Phase, SeriesPoint

log = logging.getLogger(__name__)

#: One colour per kernel variant or node, readable on white and for most colour blindness.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")
BEFORE, AFTER, NEUTRAL = "#d55e00", "#009e73", "#7f7f7f"

#: A series longer than this is drawn with neighbouring intervals merged.
MAX_POINTS = 600

UNIT_LABEL = {"insn": "guest instructions", "ns": "guest time (ns)"}


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
    fig = _figure()
    ax = fig.add_subplot()
    for colour, node in zip(itertools.cycle(PALETTE), nodes, strict=False):
        ys = [p.nodes[node].total if node in p.nodes else 0 for p in points]
        ax.plot([p.t for p in points], ys, color=colour, linewidth=1.4, label=f"node {node}")
    for mark in marks:
        ax.axvline(mark.t, color=NEUTRAL, linestyle="--", linewidth=1)
        ax.annotate(mark.name, xy=(mark.t, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -3), textcoords="offset points", va="top", fontsize=8,
                    color="#333333")
    ax.set_xlabel(UNIT_LABEL.get(unit, unit))
    ax.set_ylabel("accesses per interval")
    ax.set_title(title, fontsize=10)
    ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4))
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


def measurements(series: str, lines: Sequence[Line]) -> str:
    """``y`` against ``x`` for one series, a line per variant, min-max as error bars."""
    fig = _figure()
    ax = fig.add_subplot()
    xs_all = [m.x for line in lines for m in line.points]
    for colour, line in zip(itertools.cycle(PALETTE), lines, strict=False):
        pts = sorted(line.points, key=lambda m: m.x)
        xs = [m.x for m in pts]
        # A value the runner could not read is a gap in the line (NaN), not a zero.
        ys = [math.nan if m.y is None else m.y for m in pts]
        low = [m.y - m.min if m.y is not None and m.min is not None else 0.0 for m in pts]
        high = [m.max - m.y if m.y is not None and m.max is not None else 0.0 for m in pts]
        ax.errorbar(xs, ys, yerr=[low, high], color=colour, marker="o", markersize=4,
                    capsize=3, linewidth=1.4, label=line.label)
    # Counts such as pages or mappers usually grow by powers of two.
    if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 16:
        ax.set_xscale("log", base=2)
        ticks = sorted(set(xs_all))
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    first = lines[0].points[0]
    ax.set_xlabel(first.x_name)
    ax.set_ylabel(first.y_name)
    ax.set_ylim(bottom=0)
    ax.set_title(series, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _svg(fig, series)
