"""The report's plots: readable units, no axis offsets, one scale for one quantity."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cxlrig.report import plots
from cxlrig.report.html import render
from cxlrig.report.plots import Line, count_unit, scaled_label, time_unit, y_scale, y_scales
from cxlrig.results.model import Access, Mark, Measurement, SeriesPoint

FIXTURES = Path(__file__).parent / "report_fixtures"
#: What matplotlib writes before a scientific multiplier (times 10^9).
TIMES = "\N{MULTIPLICATION SIGN}"


@pytest.mark.parametrize(("values", "expected"), [
    ([1e7], (1e6, "ms")),
    ([12.5, 999.0], (1.0, "ns")),
    ([1500.0, None, math.nan, 20.0], (1e3, "µs")),
    ([-2e6], (1e6, "ms")),
    ([3.2e9], (1e9, "s")),
    ([], (1.0, "ns")),
    ([None], (1.0, "ns")),
])
def test_time_unit_follows_the_largest_value(
        values: list[float | None], expected: tuple[float, str]) -> None:
    assert time_unit(values) == expected


def test_count_unit_and_labels() -> None:
    assert count_unit([4.32e9]) == (1e9, "billions")
    assert count_unit([36623]) == (1e3, "thousands")
    assert count_unit([512]) == (1.0, "")
    assert scaled_label("ns per page", [1e7, 2e6]) == (1e6, "ms per page")
    assert scaled_label("guest time (ns)", [5e8]) == (1e6, "guest time (ms)")
    assert scaled_label("accesses per interval", [36623]) == \
        (1e3, "accesses per interval (thousands)")
    assert scaled_label("pages", [1, 512]) == (1.0, "pages")
    # "ns" only as a word: "nsec" or "runs" are no unit.
    assert scaled_label("runs", [2e6])[1] == "runs (millions)"


def _line(label: str, series: str, ys: list[float], y_name: str = "ns per page") -> Line:
    return Line(label, [Measurement(series=series, x=2.0 ** i, y=y, x_name="pages", y_name=y_name,
                                    min=0.9 * y, max=1.1 * y) for i, y in enumerate(ys)])


def _drawn(fig: Figure) -> Axes:
    fig.draw_without_rendering()  # tick labels and offset texts are made when drawn
    (ax,) = fig.axes
    return ax


def test_ten_milliseconds_per_page_is_shown_as_such() -> None:
    lines = [_line("v1", "s", [1.2e7, 1.0e7, 0.9e7, 0.85e7, 0.8e7])]
    ax = _drawn(plots.measurement_figure("s", lines))
    assert ax.get_ylabel() == "ms per page"
    assert ax.yaxis.get_offset_text().get_text() == ""  # no "1e7" in the corner
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels and not any("e" in t or TIMES in t for t in labels), labels
    # The data is divided, and the axis reaches above the largest error bar (13.2 ms).
    bottom, top = ax.get_ylim()
    assert bottom == 0 and 13.2 <= top <= 16
    (bars,) = ax.containers  # the errorbar: its data line first
    assert list(bars[0].get_ydata()) == pytest.approx([12, 10, 9, 8.5, 8])


def test_series_of_one_quantity_share_one_scale() -> None:
    phys = [_line("v1", "move_phys_pages by page count", [58000, 14000, 9600]),
            _line("v2", "move_phys_pages by page count", [60000, 15000, 10000])]
    virt = [_line("v1", "move_pages by page count", [46000, 13000, 9000])]
    other = [_line("v1", "dram share", [0.2, 0.9], y_name="share")]
    series = {"move_phys_pages by page count": phys, "move_pages by page count": virt,
              "dram share": other}
    scales = y_scales(series)
    assert scales["move_phys_pages by page count"] == scales["move_pages by page count"]
    assert scales["move_pages by page count"].label == "µs per page"
    assert scales["dram share"].label == "share"
    assert 0.99 <= (scales["dram share"].high or 0) <= 1.25  # its own scale
    axes = [_drawn(plots.measurement_figure(name, lines, scales[name]))
            for name, lines in series.items()]
    assert axes[0].get_ylim() == axes[1].get_ylim()
    assert axes[0].get_ylim()[1] >= 66  # v2's 60 us + 10 %
    assert [t.get_text() for t in axes[0].get_yticklabels()] == \
        [t.get_text() for t in axes[1].get_yticklabels()]
    # Scaled alone, the smaller series would have had a lower top.
    assert y_scale([virt]).high is not None
    assert (y_scale([virt]).high or 0) < axes[1].get_ylim()[1]
    # measurement_set draws them all, in order, on those scales.
    svgs = plots.measurement_set(series)
    assert len(svgs) == 3 and all(s.startswith('<svg class="plot"') for s in svgs)
    assert "µs per page" in svgs[0] and "µs per page" in svgs[1]


def test_empty_and_unread_values_still_draw() -> None:
    gaps = Line("v1", [Measurement(series="s", x=1.0, y=None, y_name="ns per page")])
    ax = _drawn(plots.measurement_figure("s", [gaps]))
    assert ax.get_ylabel() == "ns per page" and ax.get_ylim()[0] == 0


def _texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_accesses_over_time_in_readable_units() -> None:
    points = [SeriesPoint(t=4.32e8 * i, unit="insn", nodes={0: Access(36000 + i, 0),
                                                            1: Access(1000, 5)})
              for i in range(1, 11)]
    svg = plots.accesses_over_time(points, [Mark("after", 2.2e9)], "accesses")
    texts = _texts(svg)
    assert "guest instructions (billions)" in texts
    assert "accesses per interval (thousands)" in texts
    assert not any(re.search(r"\de[+-]?\d", t) or TIMES in t for t in texts), texts
    ns = [SeriesPoint(t=2e7 * i, unit="ns", nodes={0: Access(10, 0)}) for i in range(1, 5)]
    assert "guest time (ms)" in _texts(plots.accesses_over_time(ns, [], "ns"))


def test_the_report_shows_microseconds(tmp_path: Path) -> None:
    results = Path(shutil.copytree(FIXTURES / "all-pass", tmp_path / "all-pass"))
    text = render(results).read_text(encoding="utf-8")
    assert text.count(">µs per page<") == 3 and ">ns per page<" not in text
    assert ">guest instructions (billions)<" in text
