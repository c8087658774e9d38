"""One self-contained HTML page for a results directory: ``RESULTS_DIR/report.html``.

Self-contained means it loads nothing: the style is inline and the plots are
inline SVG, so the page can be mailed or archived on its own. The only links
lead to each run's logs, relative to the results directory, so they keep
working wherever the directory is copied. Every piece of text from the
results goes through :func:`html.escape`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from urllib.parse import quote

from cxlrig.files import write_atomic
from cxlrig.report._util import json_value, showable
from cxlrig.report.terminal import summary_line
from cxlrig.results.model import Check, Results, Run, Step, Verdict, load_results

# cxlrig.report.plots is imported only where a page has plots: matplotlib takes
# a second to import, and a matrix renders hundreds of reports, most without.

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"

#: Files a run directory may hold, in the order they are linked.
RUN_FILES = ("console.log", "qemu.log", "argv.sh", "steps.jsonl", "plugin.json")
#: Of those, the ones every run directory should have (the others are linked if present).
EXPECTED_FILES = ("console.log", "qemu.log", "argv.sh")

#: Step output longer than this is cut in the page (the full text is in the logs).
OUTPUT_CHARS = 4096

CSS = """
:root { --pass: #1a7f37; --fail: #cf222e; --error: #9a6700; --muted: #57606a;
        --line: #d0d7de; --head: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2328; margin: 0 auto; padding: 1.5em 2em 4em; max-width: 1400px; }
h1 { font-size: 1.6em; margin: 0 0 .2em; }
h2 { font-size: 1.3em; margin: 2em 0 .4em; border-bottom: 1px solid var(--line);
     padding-bottom: .2em; }
h3 { font-size: 1.1em; margin: 1.6em 0 .4em; }
h4 { font-size: 1em; margin: 1.2em 0 .3em; }
.meta, .muted { color: var(--muted); }
table { border-collapse: collapse; margin: .4em 0 1em; width: 100%; }
th, td { border: 1px solid var(--line); padding: .35em .6em; text-align: left;
         vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { font: 12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
pre { background: var(--head); border: 1px solid var(--line); padding: .5em .7em;
      overflow-x: auto; white-space: pre-wrap; word-break: break-all; margin: .3em 0; }
.badge { display: inline-block; min-width: 3.6em; text-align: center; padding: .05em .5em;
         border-radius: 1em; color: white; font-weight: 700; font-size: .85em;
         text-transform: uppercase; letter-spacing: .03em; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.badge.error { background: var(--error); } .badge.skip { background: #6e7781; }
.badge.unjudged { background: #0969da; }
.outcome { display: block; margin-top: .2em; }
.actual { display: block; color: var(--muted); font-size: .9em; }
tr.failed td { background: #ffebe9; }
.summary .pass { color: var(--pass); } .summary .fail { color: var(--fail); }
.summary .error { color: var(--error); }
.summary { font-size: 1.1em; font-weight: 600; margin: .4em 0 1em; }
.files a, .files span { margin-right: 1em; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.plots figure { margin: 0; max-width: 100%; }
svg.plot { display: block; width: 100%; height: auto; }
details > summary { cursor: pointer; color: var(--muted); }
.error-text { border-color: var(--error); background: #fff8c5; }
"""


def _e(text: object) -> str:
    return escape(showable(str(text)), quote=True)


def _anchor(*parts: str) -> str:
    return "run-" + "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)


def _badge(verdict: Verdict) -> str:
    return f'<span class="badge {verdict.value}">{verdict.value}</span>'


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} s"


def _cut(text: str, limit: int = OUTPUT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more)"


def _actuals(run: Run, limit: int = 3) -> str:
    """The checks' actual values, failed first: what the cell means by "actual"."""
    # A check with neither field nor actual value (an older runner's) has nothing to show.
    shown = [c for c in run.checks if c.field is not None or c.actual is not None]
    checks = sorted(shown, key=lambda c: c.ok)[:limit]
    items = []
    for c in checks:
        name = c.field or c.step or "value"
        items.append(f"{_e(name)} = {_e(json_value(c.actual, 60))}")
    more = len(shown) - len(checks)
    if more > 0:
        items.append(f"+{more} more")
    return "; ".join(items)


# -- the verdict table ---------------------------------------------------------------


def _predicted(runs: Sequence[Run]) -> str:
    texts = dict.fromkeys(r.predicted for r in runs if r.predicted)
    if len(texts) <= 1:
        return _e(next(iter(texts), ""))
    return "<br>".join(f"<b>{_e(r.variant)}</b>: {_e(r.predicted)}" for r in runs if r.predicted)


def _verdict_cell(run: Run | None) -> str:
    if run is None:
        return '<td class="muted">not run</td>'
    actual = _actuals(run)
    return (f'<td><a href="#{_anchor(run.scenario, run.variant)}">{_badge(run.verdict)}</a>'
            f'<span class="outcome">{_e(run.outcome)}</span>'
            + (f'<span class="actual">{actual}</span>' if actual else "") + "</td>")


def _verdict_table(results: Results) -> str:
    head = "".join(f"<th>{_e(v)}</th>" for v in results.variants)
    rows = []
    for scenario in results.scenarios:
        runs = results.runs_of(scenario)
        title = next((r.title for r in runs if r.title), "")
        point = next((r.point for r in runs if r.point), "")
        reviewers = next((r.reviewers for r in runs if r.reviewers), ())
        cells = "".join(_verdict_cell(results.run(scenario, v)) for v in results.variants)
        rows.append(
            f'<tr><td><a href="#{_anchor(scenario)}"><b>{_e(scenario)}</b></a>'
            + (f'<br><span class="muted">{_e(title)}</span>' if title else "")
            + f"</td><td>{_e(point)}"
            + (f'<br><span class="muted">{_e(", ".join(reviewers))}</span>' if reviewers else "")
            + f"</td><td>{_predicted(runs)}</td>{cells}</tr>")
    return ("<table class=\"verdicts\"><thead><tr><th>scenario</th><th>reviewer point</th>"
            f"<th>predicted</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _summary(results: Results) -> str:
    text = _e(summary_line(results))
    for v in Verdict:
        text = re.sub(rf"\b(\d+ {v.value})\b", rf'<span class="{v.value}">\1</span>', text)
    return f'<p class="summary">{text}</p>'


# -- one run ---------------------------------------------------------------------------


def _files(results: Results, run: Run) -> str:
    if run.run_dir is None:
        return '<p class="files muted">no run directory recorded</p>'
    base = results.directory / run.run_dir
    links = [f'<a href="{_e(quote(run.run_dir))}/">{_e(run.run_dir)}/</a>']
    for name in RUN_FILES:
        href = quote(f"{run.run_dir}/{name}")
        if (base / name).is_file():
            links.append(f'<a href="{_e(href)}">{_e(name)}</a>')
        elif name in EXPECTED_FILES:
            links.append(f'<span class="muted">{_e(name)} (missing)</span>')
    return f'<p class="files">{"".join(links)}</p>'


def _output(step: Step) -> str:
    parts = []
    for name, text in (("stdout", step.stdout), ("stderr", step.stderr)):
        if text.strip():
            lines = text.count("\n") + (not text.endswith("\n"))
            parts.append(f"<details><summary>{name} ({lines} line{'s' * (lines != 1)})"
                         f"</summary><pre>{_e(_cut(text))}</pre></details>")
    return "".join(parts)


def _steps(run: Run) -> str:
    if not run.steps:
        return '<p class="muted">no steps recorded</p>'
    failed_steps = {c.step for c in run.failed_checks}
    rows = []
    for i, s in enumerate(run.steps, 1):
        cls = ' class="failed"' if s.id and s.id in failed_steps else ""
        status = "" if s.status is None else str(s.status)
        step_id = f"<code>{_e(s.id)}</code>" if s.id else '<span class="muted">—</span>'
        rows.append(
            f"<tr{cls}><td class=\"num\">{i}</td><td>{step_id}</td>"
            f"<td>{_e(s.kind)}</td><td>{_e(s.user or '')}</td>"
            f"<td><code>{_e(s.command)}</code>{_output(s)}</td>"
            f'<td class="num">{_e(status)}</td><td class="num">{_seconds(s.seconds)}</td></tr>')
    return ("<table><thead><tr><th>#</th><th>step</th><th>kind</th><th>user</th>"
            "<th>command</th><th>status</th><th>time</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _faults(run: Run) -> str:
    """Each fault step beside the guest's reaction: what was injected where, what
    the kernel logged (its trace record and kernel log lines), and the verdict of
    the field-by-field comparison."""
    rows = []
    for s in run.steps:
        if s.kind == "hotplug" and isinstance(s.data, dict):
            rows.append(_hotplug_row(s))
            continue
        if s.kind not in ("inject", "dcd") or not isinstance(s.data, dict):
            continue
        d = s.data
        target = d.get("target") or {}
        where = [f"device {d.get('device')} ({d.get('memdev')})"]
        if "dpa" in target:
            where.append(f"DPA {target['dpa']:#x}")
        if target.get("hpa") is not None:
            where.append(f"HPA {target['hpa']:#x} in {target.get('region') or '?'}")
        qmp = d.get("qmp") or {}
        args = {k: v for k, v in (qmp.get("arguments") or {}).items() if k != "path"}
        injected = (f"<b>{_e(d.get('fault'))}</b><br>{_e(', '.join(where))}"
                    f"<pre>{_e(qmp.get('execute'))} {_e(json_value(args))}</pre>")
        if "refused" in qmp:
            injected += f"QEMU refused: <code>{_e(qmp['refused'])}</code>"
        record = d.get("record")
        others = [r for r in d.get("records", []) if r != record] if s.kind == "inject" else []
        if isinstance(record, dict):
            logged = f"<pre>{_e(record.get('event'))}: {_e(record.get('text', ''))}</pre>"
        elif s.kind == "dcd":
            logged = "".join(f"<pre>{_e(r.get('event'))}: {_e(r.get('text', ''))}</pre>"
                             for r in d.get("records", [])) or \
                f'<span class="muted">no CXL record within {_e(d.get("waited_s"))} s</span>'
            logged += (f"<br>capacity: {_e(json_value(d.get('partitions')))}, extents: "
                       f"{_e(json_value(d.get('extents')))}")
            record = None
        else:
            logged = (f'<span class="muted">no {_e(d.get("event"))} record within '
                      f"{_e(d.get('waited_s'))} s</span>")
        if others:
            logged += f'<span class="muted">and {len(others)} other record(s)</span>'
        dmesg = d.get("dmesg") or []
        if dmesg:
            logged += (f"<details><summary>kernel log ({len(dmesg)} line"
                       f"{'s' * (len(dmesg) != 1)})</summary>"
                       f"<pre>{_e(_cut(chr(10).join(dmesg)))}</pre></details>")
        rows_ok = d.get("roundtrip")
        if isinstance(rows_ok, list) and rows_ok:
            bad = [r for r in rows_ok if not r.get("ok")]
            verdict = (f'<span class="badge {"fail" if bad else "pass"}">'
                       f'{"fail" if bad else "pass"}</span> '
                       f"{len(rows_ok) - len(bad)} of {len(rows_ok)} fields as injected")
            verdict += "".join(f"<br><code>{_e(r.get('field'))}</code>: injected "
                               f"<code>{_e(json_value(r.get('injected')))}</code>, observed "
                               f"<code>{_e(json_value(r.get('observed')))}</code>"
                               for r in bad)
        else:
            verdict = '<span class="muted">not compared (see the expectations)</span>'
        cls = ' class="failed"' if isinstance(rows_ok, list) and any(
            not r.get("ok") for r in rows_ok) else ""
        step = f"<code>{_e(s.id)}</code>" if s.id else '<span class="muted">—</span>'
        rows.append(f"<tr{cls}><td>{step}</td><td>{injected}</td><td>{logged}</td>"
                    f"<td>{verdict}</td></tr>")
    if not rows:
        return ""
    return ("<h4>Faults and the guest's reaction</h4><table><thead><tr><th>step</th>"
            "<th>injected</th><th>the guest kernel logged</th><th>outcome</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def _ms(value: object) -> str:
    return f"{value:.0f} ms" if isinstance(value, (int, float)) else "—"


def _share(value: object) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "—"


def _tiering(run: Run) -> str:
    """The tiering steps side by side: one row per policy, and DRAM's share over time."""
    steps = [s for s in run.steps if s.kind == "tiering" and isinstance(s.data, dict)]
    if not steps:
        return ""
    rows = []
    for s in steps:
        d = s.data
        t90 = d.get("time_to_90_s")
        migrated = d.get("pages_migrated")
        rows.append(
            f"<tr><td><code>{_e(s.id)}</code></td><td>{_e(d.get('policy'))}</td>"
            f'<td class="num">{_share(d.get("final_dram_share"))}</td>'
            f'<td class="num">{_share(d.get("final_hot_on_dram"))}</td>'
            f'<td class="num">{f"{t90:g} s" if isinstance(t90, (int, float)) else "never"}</td>'
            f'<td class="num">{_share(d.get("precision"))}</td>'
            f'<td class="num">{_share(d.get("recall"))}</td>'
            f'<td class="num">{_e(d.get("moved_pages"))}</td>'
            f'<td class="num">{_e(migrated) if migrated is not None else "—"}</td>'
            f'<td class="num" title="{_e(d.get("policy_cpu"))}">'
            f'{_ms(d.get("policy_cpu_ms"))}</td>'
            f'<td class="num">{_ms(d.get("workload_sys_ms"))}</td></tr>')
    w = steps[0].data.get("workload") or {}
    swap = w.get("swap_at")
    moves = (f"; from interval {swap} on the cold set is the hot one" if swap else "")
    about = (f"<p class=\"meta\">Workload: {_e(w.get('hot_pages'))} hot and "
             f"{_e(w.get('cold_pages'))} cold pages placed on node {_e(w.get('source_node'))}, "
             f"{_e(w.get('intervals'))} intervals of {_e(w.get('seconds'))} s, "
             f"{_e(w.get('ratio'))} hot passes per iteration, one cold pass per "
             f"{_e(w.get('cold_ms'))} ms{_e(moves)}. Precision: the moved pages that were "
             "hot when they moved; recall: the last hot set's pages that were moved; "
             "pages migrated: the guest's pgmigrate_success (every migration, any "
             "page); policy CPU: hover for what it measures.</p>")
    table = ("<table><thead><tr><th>step</th><th>policy</th><th>DRAM share, last "
             "interval</th><th>hot set on DRAM</th><th>90 % of hot set on DRAM after</th>"
             "<th>precision</th><th>recall</th><th>workload pages moved</th>"
             "<th>pages migrated</th><th>policy CPU</th><th>workload system time</th>"
             f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    from cxlrig.report import plots

    lines = [plots.PolicyLine(
        f"{s.data.get('policy')}" + (f" ({s.id})" if s.id != s.data.get("policy") else ""),
        [float(iv["t_s"]) for iv in s.data.get("intervals", [])],
        [iv.get("dram_share") for iv in s.data.get("intervals", [])]) for s in steps]
    marks = [((swap - 1) * float(w.get("seconds") or 0), "hot set moves")] if swap else []
    label = f"{run.scenario} on {run.variant}"
    figure = _figure(plots.tiering_shares(lines, f"DRAM share per interval: {label}", marks),
                     "Share of the workload's own accesses that DRAM served in each "
                     "interval, from the plugin's per-page counts, one line per policy.")
    return (f"<h4>Tiering policies against the plugin's ground truth</h4>{about}{table}"
            f'<div class="plots">{figure}</div>')


def tiering_phases(run: Run) -> set[str]:
    """The plugin phases a tiering step closed (its intervals and its start)."""
    names: set[str] = set()
    for s in run.steps:
        if s.kind == "tiering" and isinstance(s.data, dict):
            names.update(s.data.get("phases") or [])
            if s.data.get("start_phase"):
                names.add(s.data["start_phase"])
    return names


def _hotplug_row(s: Step) -> str:
    d = s.data
    commands = "".join(f"<pre>{_e(c.get('execute'))} {_e(json_value(c.get('arguments')))}</pre>"
                       for c in d.get("qmp", []) if isinstance(c, dict))
    injected = f"<b>hotplug {_e(d.get('action'))}</b><br>device {_e(d.get('device'))}{commands}"
    if "refused" in d:
        injected += f"QEMU refused: <code>{_e(d['refused'])}</code>"
    after = d.get("after") or {}
    logged = (f"memdevs {_e(json_value(after.get('memdevs')))}, regions committed "
              f"{_e(json_value(after.get('regions')))}, node memory (kB) "
              f"{_e(json_value(after.get('node_kb')))}")
    dmesg = d.get("dmesg") or []
    if dmesg:
        logged += (f"<details><summary>kernel log ({len(dmesg)} line"
                   f"{'s' * (len(dmesg) != 1)})</summary>"
                   f"<pre>{_e(_cut(chr(10).join(dmesg)))}</pre></details>")
    what = "the guest showed the memdev" if d.get("action") == "add" else "QEMU let it go"
    verdict = (f"{what} after {_e(d.get('seconds'))} s" if d.get("done") else
               f'<span class="muted">not done: {what.replace("showed", "did not show")}'
               "</span>")
    step = f"<code>{_e(s.id)}</code>" if s.id else '<span class="muted">—</span>'
    return f"<tr><td>{step}</td><td>{injected}</td><td>{logged}</td><td>{verdict}</td></tr>"


def _check_rows(checks: Iterable[Check]) -> str:
    rows = []
    for c in checks:
        where = ".".join(p for p in (c.step, c.field) if p)
        cls = "" if c.ok else ' class="failed"'
        rows.append(f"<tr{cls}><td><code>{_e(where)}</code></td><td>{_e(c.op or '')}</td>"
                    f"<td><code>{_e(json_value(c.expected))}</code></td>"
                    f"<td><code>{_e(json_value(c.actual))}</code></td>"
                    f"<td>{_e(c.message)}</td></tr>")
    return ("<table><thead><tr><th>check</th><th>op</th><th>expected</th><th>actual</th>"
            f"<th>message</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _checks(run: Run) -> str:
    failed = run.failed_checks
    passed = [c for c in run.checks if c.ok and c.skipped is None]
    skipped = [c for c in run.checks if c.skipped is not None]
    out = []
    if failed:
        out.append(f"<h4>Failed checks ({len(failed)})</h4>{_check_rows(failed)}")
    if skipped:
        out.append(f"<h4>Skipped cases ({len(skipped)})</h4>{_check_rows(skipped)}")
    if passed:
        out.append(f"<details><summary>{len(passed)} check{'s' * (len(passed) != 1)} "
                   f"passed</summary>{_check_rows(passed)}</details>")
    if not run.checks:
        out.append('<p class="muted">no checks recorded</p>')
    return "".join(out)


def phases_after_promotion(run: Run) -> set[str | None]:
    """Names of the plugin phases that ended after the run's first ``promote`` step.

    A phase is named after the mark that closed it, so the phase a ``mark``
    step closes ended after the promotion when that step comes after the
    ``promote`` step. The phase still open at the end (name None) ended after
    it too. Phases whose mark cannot be found among the steps are judged by
    their name ("after..."). Empty when the run promoted nothing.
    """
    promote = next((i for i, s in enumerate(run.steps) if s.kind == "promote"), None)
    if promote is None or run.plugin is None:
        return set()
    marked: dict[str, int] = {}
    for i, s in enumerate(run.steps):
        if s.kind == "mark":
            name = s.data.get("name") if isinstance(s.data, dict) else None
            marked[name if isinstance(name, str) else s.id] = i
    after: set[str | None] = set()
    for phase in run.plugin.phases:
        if phase.name is None:
            after.add(None)
        elif phase.name in marked:
            if marked[phase.name] > promote:
                after.add(phase.name)
        elif phase.name.lower().startswith("after"):
            after.add(phase.name)
    return after


def _figure(svg: str, caption: str) -> str:
    # At its natural size every plot has the same font size; narrower screens shrink it.
    from cxlrig.report import plots

    width = plots.natural_width_px(svg)
    style = f' style="width: {width:.0f}px"' if width else ""
    return (f"<figure{style}>{svg}<figcaption class=\"muted\">{_e(caption)}</figcaption>"
            "</figure>")


def run_plots(run: Run) -> list[str]:
    """The plugin's plots for one run (none without plugin data)."""
    out: list[str] = []
    plugin = run.plugin
    if plugin is None:
        return out
    label = f"{run.scenario} on {run.variant}"
    from cxlrig.report import plots

    if plugin.series:
        out.append(_figure(plots.accesses_over_time(plugin.series, plugin.marks,
                                                    f"Accesses per node: {label}"),
                           "Accesses to each NUMA node per sampling interval, from the "
                           "plugin; dashed lines are the scenario's phase marks."))
    # A tiering step's intervals have a plot of their own.
    skip = tiering_phases(run)
    shared = [p for p in plugin.phases if p.dram_share is not None and p.name not in skip]
    if skip:  # what is left of a tiering run is boot and the end: nothing to compare
        shared = [p for p in shared if p.name not in (None, "boot")]
    if shared:
        out.append(_figure(plots.dram_share(shared, phases_after_promotion(run),
                                            f"DRAM share per phase: {label}"),
                           "Share of node accesses served by DRAM in each phase."))
    return out


def _run_section(results: Results, run: Run) -> str:
    parts = [f'<section id="{_anchor(run.scenario, run.variant)}">',
             f"<h3>{_badge(run.verdict)} {_e(run.scenario)} on {_e(run.variant)}</h3>",
             '<p class="meta">',
             f"topology <b>{_e(run.topology or '?')}</b>",
             f" · {_seconds(run.seconds)}" if run.seconds is not None else "",
             f" · predicted: {_e(run.predicted)}" if run.predicted else "",
             "</p>", _files(results, run)]
    if run.error:
        where = f" (step {_e(run.error_step)})" if run.error_step else ""
        parts.append(f"<h4>Could not complete{where}</h4><pre class=\"error-text\">"
                     f"{_e(run.error)}</pre>")
        if run.traceback and run.run_dir:
            href = quote(f"{run.run_dir}/{run.traceback}")
            parts.append(f'<p class="meta">traceback: <a href="{href}">{_e(run.traceback)}</a></p>')
    if run.reason:
        parts.append(f"<p>Skipped: {_e(run.reason)}</p>")
    parts.append(_checks(run))
    parts.append(_faults(run))
    parts.append(_tiering(run))
    parts.append(f"<h4>Steps</h4>{_steps(run)}")
    figures = run_plots(run)
    if figures:
        parts.append(f"<h4>Plugin</h4><div class=\"plots\">{''.join(figures)}</div>")
    parts.append("</section>")
    return "".join(parts)


def _scenario_section(results: Results, scenario: str) -> str:
    runs = results.runs_of(scenario)
    title = next((r.title for r in runs if r.title), "")
    point = next((r.point for r in runs if r.point), "")
    reviewers = next((r.reviewers for r in runs if r.reviewers), ())
    head = (f'<section id="{_anchor(scenario)}"><h2>{_e(scenario)}'
            + (f": {_e(title)}" if title else "") + "</h2>")
    if point:
        who = f" ({_e(', '.join(reviewers))})" if reviewers else ""
        head += f"<p>Reviewer point: <i>{_e(point)}</i>{who}</p>"
    ordered = sorted(runs, key=lambda r: r.variant)
    return head + "".join(_run_section(results, r) for r in ordered) + "</section>"


# -- measurements across runs ------------------------------------------------------------


def measurement_plots(results: Results) -> list[str]:
    """One plot per measurement series, one line per run that measured it."""
    by_series: dict[str, list[Run]] = {}
    for run in results.runs:
        for name in dict.fromkeys(m.series for m in run.measurements):
            by_series.setdefault(name, []).append(run)
    if not by_series:
        return []
    from cxlrig.report import plots

    named: dict[str, list[plots.Line]] = {}
    for name, runs in by_series.items():
        several = len({r.scenario for r in runs}) > 1
        named[name] = [plots.Line(label=f"{r.scenario} {r.variant}" if several else r.variant,
                                  points=[m for m in r.measurements if m.series == name])
                       for r in runs]
    # Plots of one quantity (ns per page, ...) share one scale, so side by side they compare.
    caption = "Points are the median over repetitions; bars span min to max."
    return [_figure(svg, caption) for svg in plots.measurement_set(named)]


# -- the page -------------------------------------------------------------------------------


def page(results: Results) -> str:
    """The whole report as one HTML string."""
    meta = [f"results <code>{_e(results.directory.resolve().name)}</code>"]
    if results.started:
        meta.append(f"started {_e(results.started)}")
    if results.finished:
        meta.append(f"finished {_e(results.finished)}")
    if results.cxlrig:
        meta.append(f"cxlrig {_e(results.cxlrig)}")
    body = ["<h1>cxlrig report</h1>", f'<p class="meta">{" · ".join(meta)}</p>',
            _summary(results), "<h2>Verdicts</h2>"]
    body.append(_verdict_table(results) if results.runs
                else '<p class="muted">no runs recorded</p>')
    figures = measurement_plots(results)
    if figures:
        body.append(f"<h2>Measurements</h2><div class=\"plots\">{''.join(figures)}</div>")
    body.extend(_scenario_section(results, s) for s in results.scenarios)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>cxlrig report: {_e(summary_line(results))}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def render(results: Results | str | Path) -> Path:
    """Write ``report.html`` atomically into the results directory (read from disk
    when given its path) and return its path."""
    if not isinstance(results, Results):
        results = load_results(results)
    path = results.directory / REPORT_FILE
    write_atomic(path, page(results).encode("utf-8"))
    log.info("wrote %s", path)
    return path
