"""The matrix dashboard: its HTML, and the page as headless Chromium draws it.

The browser tests are skipped when no ``chromium`` is installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
from PIL import Image

from cxlrig.matrix.dashboard import DASHBOARD_FILE, render_dashboard
from cxlrig.matrix.record import Cell, CellCheck, KernelId, MatrixRun, cell_dir
from cxlrig.results import Verdict

from .browser import CHROMIUM, MISSING, chromium, count_pixels

WIDTH, HEIGHT = 1400, 1400

TOPOLOGIES = ("default", "interleave", "two-cxl")
VARIANTS = ("v1", "v2")
SCENARIOS = ("shared-cow-page", "bring-up", "migration-cost", "unprivileged-caller")
#: Cells that do not pass; every other cell passes.
OTHER = {
    "default/v2/shared-cow-page": Verdict.FAIL,
    "interleave/v2/shared-cow-page": Verdict.FAIL,
    "two-cxl/v1/unprivileged-caller": Verdict.FAIL,
    "default/v1/migration-cost": Verdict.ERROR,
    "interleave/v1/migration-cost": Verdict.ERROR,
    "two-cxl/v2/migration-cost": Verdict.ERROR,
    "two-cxl/v1/bring-up": Verdict.SKIP,
    "two-cxl/v2/bring-up": None,  # planned, not run yet
}
FLAKY = "interleave/v1/bring-up"
REGRESSIONS = ("default/v2/shared-cow-page: pass -> fail (move: status[0] == -13, got 0)",
               "two-cxl/v1/unprivileged-caller: pass -> fail <b>&</b> \"quoted\"")
TRENDS: dict[str, list[str | None]] = {
    "default/v2/shared-cow-page": ["pass", "pass", None, "fail"],
    "default/v1/bring-up": ["pass", "error", "pass"],
}


def _marker(key: str) -> str:
    return f"CELL-REPORT-MARKER {key}"


def _run(directory: Path) -> MatrixRun:
    """3 topologies x 2 variants x 4 scenarios; a tiny report for each finished,
    not skipped cell, where ``cell.report`` points."""
    cells = []
    for topology in TOPOLOGIES:
        for variant in VARIANTS:
            for scenario in SCENARIOS:
                key = f"{topology}/{variant}/{scenario}"
                verdict = OTHER.get(key, Verdict.PASS)
                cell = Cell(key=key, scenario=scenario, topology=topology, variant=variant,
                            verdict=verdict, attempts=0 if verdict is None else 1)
                if verdict is Verdict.FAIL:
                    cell = replace(cell, outcome="a check did not hold",
                                   checks=(CellCheck(False, "move: status[0] == -13 (got 0)"),))
                elif verdict is Verdict.ERROR:
                    cell = replace(cell, outcome="guest did not boot",
                                   reason="timed out after 600 s waiting for the prompt")
                elif verdict is Verdict.SKIP:
                    cell = replace(cell, reason="needs two CXL windows")
                elif verdict is Verdict.PASS:
                    cell = replace(cell, outcome="every check held", seconds=42.0)
                if key == FLAKY:
                    cell = replace(cell, flaky=True, attempts=2)
                if verdict is not None and verdict is not Verdict.SKIP:
                    results = cell_dir(directory, key) / "results"
                    report = results / "report.html"
                    report.parent.mkdir(parents=True, exist_ok=True)
                    report.write_text(f"<!DOCTYPE html><html><body><h1>{_marker(key)}</h1>"
                                      "</body></html>\n")
                    cell = replace(cell, results=str(results.relative_to(directory)),
                                   report=str(report.relative_to(directory)))
                cells.append(cell)
    kernels = {v: KernelId(label=v, like=v, image_hash="0123456789abcdef") for v in VARIANTS}
    return MatrixRun(version=1, name="nightly", matrix_file="matrices/nightly.yaml",
                     shard="1/1", started="2025-01-02T03:04:05Z",
                     finished="2025-01-02T04:05:06Z", cells=tuple(cells), kernels=kernels,
                     qemu="9.2.0", cxlrig="0.4.0")


class _Page(HTMLParser):
    """What the tests look at: the grid's cells, headers, links, and the order of things."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.events: list[str] = []  # "grid", "regression:<text>", ...
        self.topologies: dict[str, str | None] = {}  # name -> colspan
        self.scenarios: list[str] = []
        self.cells: dict[str, dict[str, str | None]] = {}  # key -> td attributes
        self.text: dict[str, str] = {}  # key -> text in its td
        self.links: dict[str, str] = {}  # key -> href
        self.trend: dict[str, list[str]] = {}  # key -> classes of its trend marks
        self._key: str | None = None
        self._th: str | None = None
        self._li = False
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if a.get("src"):
            self.srcs.append(a["src"] or "")
        if tag == "table" and "grid" in classes:
            self.events.append("grid")
        if tag == "ul" and "regressions" in classes:
            self.events.append("regressions")
        if tag == "li":
            self._li, self._buf = True, []
        if tag == "th" and ("topology" in classes or "scenario" in classes):
            self._th, self._buf = ("topology" if "topology" in classes else "scenario"), []
            self._colspan = a.get("colspan")
        if tag == "td" and a.get("data-key"):
            self._key = a["data-key"] or ""
            self.cells[self._key] = a
            self.text[self._key] = ""
            self.trend[self._key] = []
        if self._key is not None and tag == "a":
            self.links[self._key] = a.get("href") or ""
        if self._key is not None and tag == "i":
            self.trend[self._key].append(a.get("class") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._key = None
        if tag == "li" and self._li:
            self._li = False
            self.events.append("regression:" + "".join(self._buf))
        if tag == "th" and self._th is not None:
            name = "".join(self._buf).strip()
            if self._th == "topology":
                self.topologies[name] = self._colspan
            elif name != "scenario":
                self.scenarios.append(name)
            self._th = None

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.text[self._key] += data
        if self._li or self._th is not None:
            self._buf.append(data)


def _parse(path: Path) -> tuple[str, _Page]:
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    return text, page


@pytest.fixture
def dashboard(tmp_path: Path) -> tuple[Path, MatrixRun]:
    run = _run(tmp_path)
    return render_dashboard(tmp_path, run, trends=TRENDS, regressions=REGRESSIONS), run


def test_the_grid_lists_every_cell_and_links_its_report(
        dashboard: tuple[Path, MatrixRun]) -> None:
    path, run = dashboard
    assert path == path.parent / DASHBOARD_FILE and path.is_file()
    assert list(path.parent.glob(f".{DASHBOARD_FILE}.*")) == []  # no temporary left
    text, page = _parse(path)
    assert text.startswith("<!DOCTYPE html>")
    # Rows are the scenarios, sorted; a topology spans its two variants.
    assert page.scenarios == sorted(SCENARIOS)
    assert page.topologies == dict.fromkeys(TOPOLOGIES, "2")
    assert set(page.cells) == {c.key for c in run.cells}
    with_report = [c for c in run.cells if c.report is not None]
    assert len(with_report) == 24 - 2  # the skipped and the not-run cell have none
    for cell in run.cells:
        if cell.report is None:
            assert cell.key not in page.links, cell.key
            continue
        href = page.links[cell.key]
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", href) and not href.startswith("/"), href
        target = (path.parent / unquote(href)).resolve()
        assert target.is_file(), href
        assert target == (path.parent / cell.report).resolve()
        assert _marker(cell.key) in target.read_text()
    # Each cell shows its verdict as a class and a word, with a tooltip.
    for cell in run.cells:
        kind = "notrun" if cell.verdict is None else cell.verdict.value
        attrs = page.cells[cell.key]
        assert kind in (attrs["class"] or "").split(), cell.key
        word = "not run" if cell.verdict is None else cell.verdict.value
        assert page.text[cell.key].startswith(word), (cell.key, page.text[cell.key])
        assert (attrs["title"] or "").startswith(f"{cell.key}: {word}")
    assert "timed out after 600 s" in (page.cells["default/v1/migration-cost"]["title"] or "")
    assert "needs two CXL windows" in (page.cells["two-cxl/v1/bring-up"]["title"] or "")
    assert "(got 0)" in (page.cells["default/v2/shared-cow-page"]["title"] or "")


def test_regressions_come_before_the_grid(dashboard: tuple[Path, MatrixRun]) -> None:
    text, page = _parse(dashboard[0])
    found = [e.removeprefix("regression:") for e in page.events if e.startswith("regression:")]
    assert found == list(REGRESSIONS)  # escaped in the page, the same text when read
    assert page.events.index("regressions") < page.events.index("grid")
    last = max(page.events.index("regression:" + r) for r in REGRESSIONS)
    assert last < page.events.index("grid")
    assert "<b>&</b>" not in text and "&lt;b&gt;&amp;&lt;/b&gt; &quot;quoted&quot;" in text
    assert "2 regressions against the previous run" in text
    assert "no regressions against the previous run" not in text


def test_no_regressions_says_so(tmp_path: Path) -> None:
    text, page = _parse(render_dashboard(tmp_path, _run(tmp_path)))
    assert "no regressions against the previous run" in text
    assert "regressions" not in page.events
    assert text.index("no regressions against") < text.index('<table class="grid"')
    assert all(marks == [] for marks in page.trend.values())  # no history, no trend marks


def test_flaky_not_run_and_trends_are_marked(dashboard: tuple[Path, MatrixRun]) -> None:
    text, page = _parse(dashboard[0])
    for key, attrs in page.cells.items():
        flaky = key == FLAKY
        assert ("flaky" in (attrs["class"] or "").split()) == flaky, key
        assert ("flaky" in page.text[key]) == flaky, key
    assert "(flaky: passed on a retry)" in (page.cells[FLAKY]["title"] or "")
    assert "not run" in page.text["two-cxl/v2/bring-up"]
    assert page.trend["default/v2/shared-cow-page"] == ["pass", "pass", "notrun", "fail"]
    assert page.trend["default/v1/bring-up"] == ["pass", "error", "pass"]
    assert page.trend["default/v1/migration-cost"] == []
    # The header: name, shard, times, versions and the counts per verdict.
    for bit in ("nightly", "shard 1/1", "started 2025-01-02T03:04:05Z",
                "finished 2025-01-02T04:05:06Z", "QEMU 9.2.0", "cxlrig 0.4.0",
                '<span class="pass">16 pass</span>', '<span class="fail">3 fail</span>',
                '<span class="error">3 error</span>', '<span class="skip">1 skip</span>',
                "1 not run", "1 flaky", 'class="legend"'):
        assert bit in text, bit


def test_the_page_needs_nothing_from_outside(dashboard: tuple[Path, MatrixRun]) -> None:
    text, page = _parse(dashboard[0])
    assert page.srcs == [] and "script" not in page.tags and "link" not in page.tags
    assert "@import" not in text and "url(" not in text
    assert re.findall(r"https?://", text) == []


def test_an_empty_run_and_a_missing_report(tmp_path: Path) -> None:
    run = _run(tmp_path)
    text, _ = _parse(render_dashboard(tmp_path, replace(run, cells=()), title="<empty>"))
    assert "no cells planned" in text and "<h1>&lt;empty&gt;</h1>" in text
    gone = "default/v1/bring-up"
    planned = run.cell(gone)
    assert planned is not None and planned.report is not None
    (tmp_path / planned.report).unlink()
    _, page = _parse(render_dashboard(tmp_path, run))
    assert gone not in page.links and "is missing" in (page.cells[gone]["title"] or "")


# -- in a browser ---------------------------------------------------------------------------


def _near(rgb: tuple[int, int, int], slack: int = 12) -> Callable[[int, int, int], bool]:
    return lambda r, g, b: all(abs(x - y) <= slack for x, y in zip((r, g, b), rgb, strict=True))


@pytest.mark.timeout(180)
@pytest.mark.skipif(CHROMIUM is None, reason=MISSING)
def test_the_dashboard_draws_and_a_cell_opens_its_report(
        dashboard: tuple[Path, MatrixRun], tmp_path: Path) -> None:
    path, _ = dashboard
    png = tmp_path / "dashboard.png"
    proc = chromium(f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", path.as_uri())
    assert png.is_file(), f"no screenshot; chromium said:\n{proc.stderr[-2000:]}"
    with Image.open(png) as im:
        assert im.size == (WIDTH, HEIGHT)
        rgb = im.convert("RGB")
    # A grid cell is about 90 x 45 pixels of its colour; the legend's swatches are small.
    cell = 2500
    assert count_pixels(rgb, _near((0x1A, 0x7F, 0x37))) > 10 * cell  # pass green, 16 cells
    assert count_pixels(rgb, _near((0xCF, 0x22, 0x2E))) > 2 * cell  # fail red, 3 cells
    assert count_pixels(rgb, _near((0xE3, 0x62, 0x09))) > 2 * cell  # error orange, 3 cells
    assert count_pixels(rgb, _near((0xFF, 0xD3, 0x3D))) > 100  # the flaky cell's stripes

    # Follow a cell's link as the browser would: its href against the page's address.
    _, page = _parse(path)
    key = "default/v2/shared-cow-page"
    url = urljoin(path.as_uri(), page.links[key])
    assert Path(unquote(urlparse(url).path)).is_file()
    proc = chromium("--dump-dom", url)
    assert _marker(key) in proc.stdout, f"chromium said:\n{proc.stderr[-2000:]}"
