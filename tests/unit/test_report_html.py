"""The HTML report: rendered from copies of the fixtures (render writes into the directory)."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cxlrig.report import ResultsFormatError, load_results
from cxlrig.report import html as report_html
from cxlrig.report.html import phases_after_promotion, render

FIXTURES = Path(__file__).parent / "report_fixtures"


@pytest.fixture
def all_pass(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "all-pass", tmp_path / "all-pass"))


@pytest.fixture
def fail_and_error(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "fail-and-error", tmp_path / "fail-and-error"))


class _Page(HTMLParser):
    """Collects what the tests look at, and proves the page parses."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"] or "")
        if a.get("src"):
            self.srcs.append(a["src"] or "")
        if tag == "section" and a.get("id"):
            self.ids.append(a["id"] or "")


def _parse(path: Path) -> tuple[str, _Page]:
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    return text, page


def test_all_pass_page(all_pass: Path) -> None:
    out = render(all_pass)
    assert out == all_pass / "report.html"
    assert sorted(p.name for p in all_pass.glob(".report.html.*")) == []  # no temporary left
    text, page = _parse(out)
    assert text.startswith("<!DOCTYPE html>")
    # Verdict table: every scenario with its reviewer point, predicted outcome, both variants.
    assert text.count('<span class="badge pass">pass</span>') == 8 * 2  # table + section heads
    assert "fail</span>" not in text and "error</span>" not in text
    assert "no permission model: anyone can move any page" in text
    assert "first_call.ret = 0" in text  # the actual values next to the verdicts
    assert "8 runs:" in text and '<span class="pass">8 pass</span>' in text
    # 3 measurement series + (accesses over time + DRAM share) for each promotion run.
    assert page.tags.count("svg") == 7
    assert text.count("<svg") == 7 and "<img" not in text
    for title in ("move_phys_pages time per page", "move_pages time per page",
                  "move_phys_pages time per page vs mappers",
                  "Accesses per node: hot-page-promotion on v1",
                  "DRAM share per phase: hot-page-promotion on v2"):
        assert f">{title}<" in text, title
    assert "before promotion" in text and "after promotion" in text
    # Each run has a section the verdict table links to.
    assert len([i for i in page.ids if i.count("-v")]) >= 8
    for href in page.hrefs:
        if href.startswith("#"):
            assert href[1:] in page.ids, href


def test_the_page_needs_nothing_from_outside(all_pass: Path) -> None:
    text, page = _parse(render(all_pass))
    assert page.srcs == []
    assert "<link" not in text and "<script" not in text and "@import" not in text
    for href in page.hrefs:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", href), href  # no scheme: all relative
    # Only namespace names in the SVG mention addresses; nothing is fetched from them.
    for url in re.findall(r"https?://[^\s\"'<>]+", text):
        assert url.startswith(("http://www.w3.org/", "https://www.w3.org/")), url


def test_links_to_the_run_files(all_pass: Path, fail_and_error: Path) -> None:
    _, page = _parse(render(all_pass))
    for href in page.hrefs:
        if not href.startswith("#"):
            assert (all_pass / href).exists(), href
    assert "hot-page-promotion-v1/plugin.json" in page.hrefs
    assert "unprivileged-caller-v1/console.log" in page.hrefs
    assert "unprivileged-caller-v1/qemu.log" in page.hrefs
    assert "unprivileged-caller-v1/argv.sh" in page.hrefs

    text, page = _parse(render(fail_and_error))
    assert "devdax-page-v1/qemu.log" not in page.hrefs
    assert "qemu.log (missing)" in text


def test_fail_and_error_page(fail_and_error: Path) -> None:
    text, _ = _parse(render(fail_and_error))
    assert text.count('<span class="badge fail">fail</span>') == 2
    assert text.count('<span class="badge error">error</span>') == 2
    assert '<span class="fail">1 fail</span>' in text
    assert '<span class="error">1 error</span>' in text
    # The failed checks with expected against actual.
    assert "Failed checks (2)" in text
    assert "<td><code>&quot;EPERM&quot;</code></td><td><code>null</code></td>" in text
    assert "move: first_call.ret == -1 (got 0)" in text
    # The error, and no plots without plugin data or measurements.
    assert "Could not complete" in text and "console tail:" in text
    assert "<svg" not in text and "<img" not in text


def test_everything_is_escaped(fail_and_error: Path) -> None:
    text, page = _parse(render(fail_and_error))
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text
    assert "\x1b" not in text and "\\x1b[31mwarning" in text
    assert "&quot;Global, I presume?&quot;" in text
    assert page.tags.count("script") == 0


def test_promotion_splits_the_phases() -> None:
    res = load_results(FIXTURES / "all-pass")
    hot = res.run("hot-page-promotion", "v1")
    assert hot is not None
    assert phases_after_promotion(hot) == {"after", None}
    other = res.run("migration-cost", "v1")
    assert other is not None and phases_after_promotion(other) == set()


def test_rendering_is_repeatable(all_pass: Path) -> None:
    first = render(all_pass).read_bytes()
    assert render(all_pass).read_bytes() == first


def test_bad_results_are_reported_and_no_page_written(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"version": 1}')
    with pytest.raises(ResultsFormatError, match="runs: required key is missing"):
        report_html.render(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_ids_are_unique_and_every_reference_resolves(all_pass: Path) -> None:
    text = render(all_pass).read_text()
    ids = re.findall(r'\sid="([^"]+)"', text)
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r"url\(#([^)]+)\)", text)) | set(re.findall(r'href="#([^"]+)"', text))
    assert refs and refs <= set(ids)


def test_a_long_series_is_merged_keeping_its_totals() -> None:
    from cxlrig.report.plots import coarsen
    from cxlrig.results.model import Access, SeriesPoint

    points = [SeriesPoint(t=float(i), unit="insn", nodes={0: Access(i, 1), 1: Access(1, 0)})
              for i in range(1, 1001)]
    merged = coarsen(points, 300)
    assert len(merged) == 250  # groups of 4
    assert merged[0].t == 4.0 and merged[-1].t == 1000.0
    assert sum(p.nodes[0].reads for p in merged) == sum(range(1, 1001))
    assert sum(p.nodes[1].total for p in merged) == 1000
    assert coarsen(points[:10], 300) == points[:10]


def test_no_runs_still_makes_a_page(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"version": 1, "runs": []}')
    text, _ = _parse(render(tmp_path))
    assert "0 runs" in text and "no runs recorded" in text


def test_gaps_and_unnamed_steps_render(all_pass: Path) -> None:
    doc = json.loads((all_pass / "results.json").read_text())
    run = doc["runs"][6]
    run["steps"][0].update(id=None, data=[1, 2])
    run["measurements"][2].update(y=None, min=None, max=None)
    (all_pass / "results.json").write_text(json.dumps(doc))
    text, page = _parse(render(all_pass))
    assert page.tags.count("svg") == 7
    assert "<td><code></code></td>" not in text  # a step without an id shows a dash


def test_fault_steps_beside_what_the_guest_logged(tmp_path: Path) -> None:
    # A real ras-aer-errors run; one comparison is turned into a mismatch.
    results = Path(shutil.copytree(FIXTURES / "faults", tmp_path / "faults"))
    doc = json.loads((results / "results.json").read_text())
    ue = next(s for s in doc["runs"][0]["steps"] if s["id"] == "ue")
    row = next(r for r in ue["data"]["roundtrip"] if r["field"] == "first_error")
    row.update(injected=64, ok=False)
    (results / "results.json").write_text(json.dumps(doc))
    text, _ = _parse(render(results))
    section = text[text.index("Faults and the guest's reaction"):]
    section = section[:section.index("</table>")]
    rows = section.split("<tr")[2:]
    assert [re.search(r"<code>([a-z_0-9]+)</code>", r).group(1) for r in rows] == [  # type: ignore[union-attr]
        "ce_masked", "ce", "ce2", "ue"]
    masked, ce, _, bad = rows
    assert "no cxl_aer_correctable_error record within 3.0" in masked
    assert "not compared" in masked
    assert "cxl-inject-correctable-error" in ce and "device mem0 (" in ce
    assert "status: &#x27;Memory Data ECC Error&#x27;" in ce and "3 of 3 fields" in ce
    assert "other record" not in ce
    assert "CorrIntErr" in ce  # the kernel log, folded
    assert bad.startswith(' class="failed"') and "3 of 4 fields" in bad
    assert "<code>first_error</code>: injected <code>64</code>, observed <code>128</code>" in bad


def test_tiering_steps_side_by_side_with_a_plot(tmp_path: Path) -> None:
    # Real runs: tiering-comparison and tiering-hot-set-moves on v2.
    results = Path(shutil.copytree(FIXTURES / "tiering", tmp_path / "tiering"))
    text, page = _parse(render(results))
    assert text.count("Tiering policies against the plugin's ground truth") == 2
    section = text[text.index("Tiering policies"):]
    table = section[:section.index("</table>")]
    rows = table.split("<tr")[2:]
    assert [re.search(r"</code></td><td>([a-z_]+)</td>", r).group(1) for r in rows] == [  # type: ignore[union-attr]
        "none", "move_phys_pages", "move_pages", "numa_balancing", "damon"]
    none, phys = rows[0], rows[1]
    assert "never" in none and "0.0 %" in none
    assert "100.0 %" in phys
    doc = json.loads((results / "results.json").read_text())
    numab = next(s for s in doc["runs"][0]["steps"] if s["id"] == "numab")["data"]
    assert f"{100 * numab['precision']:.1f} %" in rows[3]
    assert f"{numab['pages_migrated']}</td>" in rows[3]
    # Two plots, one a run: the intervals are not also drawn as per-phase bars.
    assert page.tags.count("svg") == 2
    assert "hot set moves" in text[text.index("tiering-hot-set-moves on v2"):]
    for policy in ("move_phys_pages", "numa_balancing", "damon"):
        assert f">{policy}<" in text.split("<svg")[1]  # the legend names every policy
