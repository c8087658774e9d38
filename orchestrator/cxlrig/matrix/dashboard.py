"""The matrix dashboard: one self-contained HTML page, ``DIR/dashboard.html``.

A grid of every cell of a matrix run: a row per scenario, a column per
variant grouped under its topology, each cell coloured by its verdict and
linking to the cell's own report. Above it the run's header and the
regressions against the previous run; in each cell the verdicts of the last
nights as small squares. Like the per-run report it loads nothing (inline
style, no script, no image) and links only relative to the matrix directory,
so the directory can be archived or served anywhere. Every piece of text goes
through :func:`html.escape`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from urllib.parse import quote

from cxlrig.files import write_atomic
from cxlrig.matrix.record import Cell, MatrixRun
from cxlrig.report._util import showable
from cxlrig.results import Verdict

log = logging.getLogger(__name__)

DASHBOARD_FILE = "dashboard.html"

#: The verdict classes, the word each shows, and what the legend says of it.
NOT_RUN = "notrun"
WORDS = {"pass": "pass", "fail": "fail", "error": "error", "skip": "skip",
         "unjudged": "unjudged", NOT_RUN: "not run"}
MEANING = {
    "pass": "every check held",
    "fail": "a check did not hold",
    "error": "the run could not complete",
    "skip": "the scenario does not apply",
    "unjudged": "ran; no expectation for this kernel",
    NOT_RUN: "planned, not run yet",
}

CSS = """
:root { --pass: #1a7f37; --fail: #cf222e; --error: #e36209; --skip: #afb8c1;
        --muted: #57606a; --line: #d0d7de; --head: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2328; margin: 0 auto; padding: 1.5em 2em 4em; max-width: 1600px; }
h1 { font-size: 1.6em; margin: 0 0 .2em; }
h2 { font-size: 1.25em; margin: 1.4em 0 .4em; border-bottom: 1px solid var(--line);
     padding-bottom: .2em; }
.meta, .muted { color: var(--muted); }
.counts { font-size: 1.1em; font-weight: 600; margin: .4em 0 .6em; }
.counts .pass { color: var(--pass); } .counts .fail { color: var(--fail); }
.counts .error { color: var(--error); } .counts .skip, .counts .notrun { color: var(--muted); }
code { font: 12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
table { border-collapse: separate; border-spacing: 3px; }
th { background: var(--head); font-weight: 600; padding: .3em .6em; text-align: center;
     border: 1px solid var(--line); }
th.scenario { text-align: left; white-space: nowrap; }
th.topology { border-bottom: 3px solid #8c959f; }
.regressions { border-left: 4px solid var(--fail); background: #ffebe9; margin: .4em 0 1em;
               padding: .5em 1em .5em 2.2em; }
.regressions li { margin: .15em 0; }
.noregressions { border-left: 4px solid var(--pass); background: #dafbe1; padding: .5em 1em;
                 margin: .4em 0 1em; }
td.cell { min-width: 6.5em; height: 3.2em; padding: .25em .4em; text-align: center;
          vertical-align: middle; border: 2px solid transparent; }
td.cell a, td.cell span.word { display: block; color: inherit; text-decoration: none;
                               font-weight: 700; text-transform: uppercase;
                               letter-spacing: .03em; }
td.cell a:hover { text-decoration: underline; }
td.pass { background: var(--pass); color: white; }
td.fail { background: var(--fail); color: white; }
td.error { background: var(--error); color: white; }
td.skip { background: var(--skip); color: #1f2328; }
td.unjudged { background: #0969da; color: white; }
td.notrun { background: white; color: var(--muted); border: 2px dashed #8c959f; }
td.none { background: white; color: var(--line); border: 1px solid #eaeef2; }
td.flaky { border: 4px solid transparent;
           border-image: repeating-linear-gradient(45deg, #1f2328 0 5px, #ffd33d 5px 10px) 4; }
.flag { display: inline-block; margin-top: .15em; padding: 0 .35em; border-radius: .3em;
        background: #ffd33d; color: #1f2328; font-size: .75em; font-weight: 700;
        text-transform: uppercase; }
.trend { display: table; margin: .25em auto 0; padding: 2px 1px; line-height: 0;
         white-space: nowrap; background: white; border-radius: 2px; }
.trend i { display: inline-block; width: 9px; height: 9px; margin: 0 1px; }
.trend i.pass { background: var(--pass); } .trend i.fail { background: var(--fail); }
.trend i.error { background: var(--error); } .trend i.skip { background: var(--skip); }
.trend i.notrun { background: white; border: 1px solid #8c959f; }
.legend { display: flex; flex-wrap: wrap; gap: .5em 1.4em; align-items: center;
          margin: 1em 0; }
.legend .swatch { display: inline-block; width: 1.4em; height: 1em; vertical-align: middle;
                  margin-right: .35em; }
.legend .swatch.pass { background: var(--pass); } .legend .swatch.fail { background: var(--fail); }
.legend .swatch.error { background: var(--error); }
.legend .swatch.skip { background: var(--skip); }
.legend .swatch.unjudged, .trend i.unjudged { background: #0969da; }
.legend .swatch.notrun { background: white; border: 2px dashed #8c959f; }
.legend .swatch.flaky { border: 3px solid transparent;
    border-image: repeating-linear-gradient(45deg, #1f2328 0 4px, #ffd33d 4px 8px) 3; }
.legend .trend { display: inline-block; vertical-align: middle; margin: 0 .35em 0 0; }
.kernels td, .kernels th { border: 1px solid var(--line); padding: .2em .6em; text-align: left; }
"""


def _e(text: object) -> str:
    return escape(showable(str(text)), quote=True)


def _kind(verdict: object) -> str:
    """The CSS class of a verdict (a Verdict, its string, or None: not run)."""
    if verdict is None:
        return NOT_RUN
    value = str(verdict)
    return value if value in WORDS else NOT_RUN


def _order(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


# -- the header -----------------------------------------------------------------------


def _counts(run: MatrixRun) -> str:
    n = len(run.cells)
    shown = [f'<span class="{v.value}">{run.count(v)} {v.value}</span>' for v in Verdict]
    waiting = sum(1 for c in run.cells if c.verdict is None)
    if waiting:
        shown.append(f'<span class="notrun">{waiting} not run</span>')
    flaky = sum(1 for c in run.cells if c.flaky)
    if flaky:
        shown.append(f'<span class="error">{flaky} flaky</span>')
    return f'<p class="counts">{n} cell{"s" * (n != 1)}: {", ".join(shown)}</p>'


def _header(run: MatrixRun, title: str) -> str:
    meta = [f"matrix <b>{_e(run.name)}</b>"]
    if run.matrix_file:
        meta.append(f"from <code>{_e(run.matrix_file)}</code>")
    meta.append(f"shard {_e(run.shard)}")
    meta.append(f"started {_e(run.started)}")
    meta.append(f"finished {_e(run.finished)}" if run.finished
                else '<span class="muted">not finished</span>')
    tools = []
    if run.qemu:
        tools.append(f"QEMU {_e(run.qemu)}")
    if run.cxlrig:
        tools.append(f"cxlrig {_e(run.cxlrig)}")
    timeout = f", timeout {run.timeout:g} s per cell" if run.timeout is not None else ""
    tools.append(f"{run.retries} retr{'y' if run.retries == 1 else 'ies'}{timeout}")
    return (f"<h1>{_e(title)}</h1>"
            f'<p class="meta">{" · ".join(meta)}</p>'
            f'<p class="meta">{" · ".join(tools)}</p>{_counts(run)}')


def _kernels(run: MatrixRun) -> str:
    if not run.kernels:
        return ""
    rows = []
    for name, k in run.kernels.items():
        rows.append(f"<tr><td><b>{_e(name)}</b></td><td>{_e(k.label)}</td><td>{_e(k.like)}</td>"
                    f"<td><code>{_e(k.image_hash)}</code></td><td>{_e(k.source)}</td></tr>")
    return ('<details><summary class="muted">kernels</summary><table class="kernels"><thead>'
            "<tr><th>variant</th><th>label</th><th>like</th><th>bzImage</th><th>source</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></details>")


def _regressions(regressions: Sequence[str], previous: str | None) -> str:
    if previous is None:
        return ('<p class="muted">not compared: no earlier run of this matrix is recorded in '
                "the history</p>")
    against = "against the previous run" + (f" (<code>{_e(previous)}</code>)" if previous
                                            else "")
    if not regressions:
        return f'<p class="noregressions">no regressions {against}</p>'
    items = "".join(f"<li>{_e(r)}</li>" for r in regressions)
    n = len(regressions)
    return (f"<h2>{n} regression{'s' * (n != 1)} {against}</h2>"
            f'<ul class="regressions">{items}</ul>')


# -- the grid ---------------------------------------------------------------------------


def _trend(past: Sequence[str | None]) -> str:
    if not past:
        return ""
    marks = "".join(f'<i class="{_kind(v)}"></i>' for v in past)
    words = ", ".join(WORDS[_kind(v)] if v is not None else "did not run" for v in past)
    return f'<span class="trend" title="last runs, oldest first: {_e(words)}">{marks}</span>'


def _tooltip(cell: Cell, has_report: bool) -> str:
    kind = _kind(cell.verdict)
    lines = [f"{cell.key}: {WORDS[kind]}" + (" (flaky: passed on a retry)" if cell.flaky else "")]
    if cell.outcome:
        lines.append(cell.outcome)
    if cell.reason:
        lines.append(cell.reason)
    failed = [c.message for c in cell.checks if not c.ok]
    lines.extend(failed[:3])
    if len(failed) > 3:
        lines.append(f"+{len(failed) - 3} more failed checks")
    if cell.attempts > 1:
        lines.append(f"{cell.attempts} attempts")
    if cell.seconds is not None:
        lines.append(f"{cell.seconds:.1f} s")
    if cell.report is not None and not has_report:
        lines.append(f"report {cell.report} is missing")
    return "\n".join(lines)


def _cell(directory: Path, cell: Cell | None, trend: Sequence[str | None]) -> str:
    if cell is None:
        return '<td class="cell none" title="not in this matrix">—</td>'
    kind = _kind(cell.verdict)
    has_report = cell.report is not None and (directory / cell.report).is_file()
    word = _e(WORDS[kind])
    if has_report and cell.report is not None:
        body = f'<a href="{_e(quote(cell.report))}">{word}</a>'
    else:
        body = f'<span class="word">{word}</span>'
    if cell.flaky:
        body += '<span class="flag">flaky</span>'
    classes = f"cell {kind}" + (" flaky" if cell.flaky else "")
    return (f'<td class="{classes}" data-key="{_e(cell.key)}" '
            f'title="{_e(_tooltip(cell, has_report))}">{body}{_trend(trend)}</td>')


def _columns(run: MatrixRun) -> list[tuple[str, list[str]]]:
    """``(topology, variants)`` in grid order: topologies sorted, variants in the
    order the run names its kernels (then as the cells name them)."""
    known = list(run.kernels)
    out = []
    for topology in sorted({c.topology for c in run.cells}):
        found = _order([c.variant for c in run.cells if c.topology == topology])
        variants = [v for v in known if v in found] + [v for v in found if v not in known]
        out.append((topology, variants))
    return out


def _grid(directory: Path, run: MatrixRun, trends: Mapping[str, Sequence[str | None]]) -> str:
    if not run.cells:
        return '<p class="muted">no cells planned</p>'
    columns = _columns(run)
    by_place = {(c.scenario, c.topology, c.variant): c for c in run.cells}
    top = "".join(f'<th class="topology" colspan="{len(vs)}">{_e(t)}</th>' for t, vs in columns)
    second = "".join(f'<th class="variant">{_e(v)}</th>' for _, vs in columns for v in vs)
    rows = []
    for scenario in sorted({c.scenario for c in run.cells}):
        cells = []
        for topology, variants in columns:
            for variant in variants:
                cell = by_place.get((scenario, topology, variant))
                trend = trends.get(cell.key, ()) if cell is not None else ()
                cells.append(_cell(directory, cell, trend))
        rows.append(f'<tr><th class="scenario">{_e(scenario)}</th>{"".join(cells)}</tr>')
    return ('<table class="grid"><thead>'
            f'<tr><th class="scenario" rowspan="2">scenario</th>{top}</tr>'
            f"<tr>{second}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _legend() -> str:
    items = [f'<span><span class="swatch {k}"></span><b>{_e(WORDS[k])}</b>: {_e(m)}</span>'
             for k, m in MEANING.items()]
    items.append('<span><span class="swatch flaky"></span><b>flaky</b>: '
                 "could not complete at first, passed on a retry</span>")
    items.append('<span><span class="trend"><i class="pass"></i><i class="fail"></i>'
                 '<i class="notrun"></i></span>the last runs of the cell, oldest first '
                 "(hollow: the cell did not run that night)</span>")
    items.append("<span>click a cell for its report</span>")
    return f'<div class="legend">{"".join(items)}</div>'


# -- the page ------------------------------------------------------------------------------


def dashboard_page(directory: Path, run: MatrixRun, *,
                   trends: Mapping[str, Sequence[str | None]] = {},
                   regressions: Sequence[str] = (), title: str | None = None,
                   previous: str | None = "") -> str:
    """The dashboard as one HTML string (``directory`` is where it will be written:
    report links are checked relative to it)."""
    heading = title or f"cxlrig matrix: {run.name}"
    body = [_header(run, heading), _kernels(run), _regressions(regressions, previous),
            "<h2>Cells</h2>", _legend(), _grid(directory, run, trends)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(heading)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")


def render_dashboard(directory: Path, run: MatrixRun, *,
                     trends: Mapping[str, Sequence[str | None]] = {},
                     regressions: Sequence[str] = (), title: str | None = None,
                     previous: str | None = "") -> Path:
    """Write ``directory/dashboard.html`` atomically and return its path.

    ``trends`` holds, by cell key, the cell's verdicts over the last runs
    (oldest first, None where it did not run); ``regressions`` one line per
    regression against the previous run, ``previous`` (None: there was
    none to compare with).
    """
    directory = Path(directory)
    path = directory / DASHBOARD_FILE
    page = dashboard_page(directory, run, trends=trends, regressions=regressions, title=title,
                          previous=previous)
    write_atomic(path, page.encode("utf-8"))
    log.info("wrote %s", path)
    return path
