"""Verdicts for a terminal: one row per scenario, one column per kernel variant."""

from __future__ import annotations

import logging

from rich.table import Table
from rich.text import Text

from cxlrig.report._util import showable
from cxlrig.results.model import Results, Run, Verdict

log = logging.getLogger(__name__)

VERDICT_STYLE = {Verdict.PASS: "bold green", Verdict.FAIL: "bold red",
                 Verdict.ERROR: "bold yellow", Verdict.SKIP: "dim",
                 Verdict.UNJUDGED: "bold blue"}

#: A cell's outcome is cut to this many characters: the HTML report has the rest.
OUTCOME_CHARS = 60


def _shorten(text: str, limit: int = OUTCOME_CHARS) -> str:
    text = " ".join(showable(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def verdict_cell(run: Run | None) -> Text:
    """The verdict, coloured, above the outcome in a few words; a dim dash if never run."""
    if run is None:
        return Text("—", style="dim")
    # Only the word is coloured: a base style would colour the outcome too.
    cell = Text()
    cell.append(run.verdict.value.upper(), style=VERDICT_STYLE[run.verdict])
    if run.seconds is not None:
        cell.append(f" {run.seconds:.1f} s", style="dim")
    cell.append("\n")
    cell.append(_shorten(run.outcome))
    return cell


def verdict_table(results: Results) -> Table:
    """Scenarios down, variants across, each cell the verdict and what actually happened."""
    table = Table(title="cxlrig verdicts", caption=summary_line(results), show_lines=True)
    table.add_column("scenario", no_wrap=True)
    for variant in results.variants:
        table.add_column(variant, overflow="fold")
    for scenario in results.scenarios:
        runs = results.runs_of(scenario)
        title = next((r.title for r in runs if r.title), "")
        name = Text(scenario, style="bold")
        if title:
            name.append("\n" + _shorten(title, 40), style="dim")
        table.add_row(name, *(verdict_cell(results.run(scenario, v)) for v in results.variants))
    return table


def summary_line(results: Results) -> str:
    """For example ``14 runs: 13 pass, 1 fail`` (verdicts with no run are left out)."""
    n = len(results.runs)
    head = f"{n} run{'' if n == 1 else 's'}"
    parts = [f"{results.count(v)} {v.value}" for v in Verdict if results.count(v)]
    return f"{head}: {', '.join(parts)}" if parts else head

