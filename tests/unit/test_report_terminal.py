"""The terminal verdict table and summary line, read back as plain text."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cxlrig.report import Results, Verdict, load_results
from cxlrig.report.terminal import summary_line, verdict_cell, verdict_table

FIXTURES = Path(__file__).parent / "report_fixtures"


def _text(table: Table, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def _row(text: str, scenario: str) -> str:
    """The first line of the row naming ``scenario``."""
    return next(line for line in text.splitlines() if scenario in line)


def test_all_pass_table() -> None:
    res = load_results(FIXTURES / "all-pass")
    table = verdict_table(res)
    assert [c.header for c in table.columns] == ["scenario", "v1", "v2"]
    assert table.row_count == 4
    text = _text(table)
    assert text.count("PASS") == 8
    assert "FAIL" not in text and "ERROR" not in text
    # A passing cell shows what was predicted, since that is what happened.
    assert "succeeds: the page moves (the hole)" in text
    assert "fails with EPERM: needs CAP_SYS_ADMIN" in text
    assert "8 runs: 8 pass" in text


def test_fail_and_error_cells_say_why() -> None:
    res = load_results(FIXTURES / "fail-and-error")
    text = _text(verdict_table(res))
    row = _row(text, "userns-capability")
    assert row.index("PASS") < row.index("FAIL")  # v1 passed, v2 failed
    assert "move: first_call.ret == -1 (got 0) (+1 more)" in text
    row = _row(text, "devdax-page")
    assert row.index("ERROR") < row.index("PASS")
    assert "timed out after 120 s waiting for the guest" in text
    assert "6 runs: 4 pass, 1 fail, 1 error" in text


def test_cells_are_coloured_by_verdict() -> None:
    res = load_results(FIXTURES / "fail-and-error")
    styles = {}
    for run in res.runs:
        cell = verdict_cell(run)
        assert not cell.style  # the outcome keeps the terminal's colour
        span = cell.spans[0]
        assert (span.start, span.end) == (0, len(run.verdict.value))
        styles[run.verdict] = str(span.style)
    assert styles == {Verdict.PASS: "bold green", Verdict.FAIL: "bold red",
                      Verdict.ERROR: "bold yellow"}


def test_a_variant_never_run_is_a_dash() -> None:
    res = load_results(FIXTURES / "fail-and-error")
    only_v1 = Results(directory=res.directory, version=1,
                      runs=tuple(r for r in res.runs if r.variant == "v1" or
                                 r.scenario == "devdax-page"))
    text = _text(verdict_table(only_v1))
    assert "—" in _row(text, "userns-capability")
    assert "—" not in _row(text, "devdax-page")


def test_long_outcomes_are_cut_and_control_characters_shown() -> None:
    res = load_results(FIXTURES / "fail-and-error")
    run = res.run("devdax-page", "v1")
    assert run is not None
    long = Results(directory=res.directory, version=1, runs=(
        run.__class__(**{**run.__dict__, "error": "\x1b[31m" + "x" * 200}),))
    cell = verdict_cell(long.runs[0]).plain
    outcome = cell.splitlines()[1]
    assert outcome.startswith("\\x1b[31mxxx") and outcome.endswith("…")
    assert len(outcome) == 60


def test_summary_line() -> None:
    res = load_results(FIXTURES / "fail-and-error")
    assert summary_line(res) == "6 runs: 4 pass, 1 fail, 1 error"
    one = Results(directory=res.directory, version=1, runs=res.runs[:1])
    assert summary_line(one) == "1 run: 1 pass"
    assert summary_line(Results(directory=res.directory, version=1, runs=())) == "0 runs"
