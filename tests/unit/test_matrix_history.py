"""The history database and compare, on recorded runs built here (no guests)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxlrig.cli import main
from cxlrig.matrix import history
from cxlrig.matrix.publish import MergeError, merge
from cxlrig.matrix.record import VERSION, Cell, KernelId, MatrixRun, load_run, write_cell, write_run
from cxlrig.results import Verdict


def _cell(key: str, verdict: Verdict, boot: float, **kw: object) -> Cell:
    topology, variant, scenario = key.split("/")
    return Cell(key=key, scenario=scenario, topology=topology, variant=variant,
                verdict=verdict, attempts=1, seconds=10.0, figures={"boot_s": boot}, **kw)


def _run(directory: Path, started: str, cells: list[Cell], shard: str = "1/1") -> Path:
    run = MatrixRun(version=VERSION, name="m", matrix_file="m.yaml", shard=shard,
                    started=started, finished=started, cells=tuple(cells),
                    kernels={"v1": KernelId(label="v1", like="v1", image_hash="ab")})
    write_run(directory, replace(run, cells=tuple(replace(c, verdict=None) for c in cells)))
    for c in cells:
        write_cell(directory, c)
    return directory


BASE = [("t/v1/a", Verdict.PASS), ("t/v1/b", Verdict.PASS), ("t/v1/c", Verdict.SKIP)]


def _record(tmp_path: Path, db: Path, n: int, cells: list[Cell]) -> int:
    d = _run(tmp_path / f"run{n}", f"2026-12-0{n}T00:00:00Z", cells)
    return history.record(load_run(d), d, db)


def test_compare_names_verdict_changes_flakes_and_figures(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    ids = [_record(tmp_path, db, i + 1, [_cell(k, v, 4.0 + 0.1 * i) for k, v in BASE])
           for i in range(3)]
    new = [_cell("t/v1/a", Verdict.FAIL, 4.1), _cell("t/v1/b", Verdict.PASS, 40.0, flaky=True),
           _cell("t/v1/c", Verdict.SKIP, 0.4)]
    last = _record(tmp_path, db, 4, new)
    changes = history.compare(ids[-1], last, db)
    regressions = sorted(c.message for c in changes if c.regression)
    assert regressions == [
        "t/v1/a: pass -> fail",
        "t/v1/b: boot_s = 40, outside [3.65522, 4.54478] (the band of the last 3 runs)",
        "t/v1/b: flaky (an error, then a pass on the retry)"]
    # 4.1 is inside the band: not named; a boot ten times faster is a change,
    # not a regression.
    assert [(c.message, c.regression) for c in changes if c.key == "t/v1/c"] == [
        ("t/v1/c: boot_s = 0.4, outside [3.65522, 4.54478] (the band of the last 3 runs)", False)]
    assert history.trends("m", last, path=db)["t/v1/a"] == ["pass", "pass", "pass", "fail"]


def test_compare_cli_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.sqlite"
    monkeypatch.setenv("CXLRIG_HISTORY", str(db))
    for i in range(2):
        _record(tmp_path, db, i + 1, [_cell(k, v, 4.0) for k, v in BASE])
    assert main(["matrix", "compare", str(tmp_path / "run2")]) == 0
    assert "nothing changed" in capsys.readouterr().out
    _record(tmp_path, db, 3, [_cell("t/v1/a", Verdict.ERROR, 4.0),
                              *[_cell(k, v, 4.0) for k, v in BASE[1:]]])
    assert main(["matrix", "compare", str(tmp_path / "run3")]) == 1
    assert "REGRESSION t/v1/a: pass -> error" in capsys.readouterr().out
    assert main(["matrix", "compare", str(tmp_path / "run1"), str(tmp_path / "run2")]) == 0
    assert main(["matrix", "compare", str(tmp_path / "nowhere")]) == 2
    assert "no such run" in capsys.readouterr().err


@given(st.lists(st.floats(1, 1e6), min_size=3, max_size=10))
def test_band_holds_its_own_values(values: list[float]) -> None:
    b = history.band(values)
    assert b is not None and all(b.low <= v <= b.high for v in values)


def test_band_needs_enough_values() -> None:
    assert history.band([5.0, 5.1]) is None
    steady = history.band([0.5, 0.5, 0.5])
    assert steady is not None and (steady.low, steady.high) == (0.5, 0.5)


def test_merge_refuses_bad_shard_sets(tmp_path: Path) -> None:
    cells = [_cell(k, v, 4.0) for k, v in BASE]
    one = _run(tmp_path / "s1", "2026-12-01T00:00:00Z", cells[0::2], shard="1/2")
    two = _run(tmp_path / "s2", "2026-12-01T00:00:00Z", cells[1::2], shard="2/2")
    with pytest.raises(MergeError, match="2 of 2 missing"):
        merge([one], tmp_path / "out1")
    with pytest.raises(MergeError, match="given twice"):
        merge([one, one], tmp_path / "out2")
    merged = merge([two, one], tmp_path / "out3")
    assert [c.key for c in merged.cells] == [c.key for c in cells]
    assert [c.verdict for c in merged.cells] == [c.verdict for c in cells]
    with pytest.raises(MergeError, match="not empty"):
        merge([one, two], tmp_path / "out3")


def test_a_damaged_record_is_named(tmp_path: Path) -> None:
    d = _run(tmp_path / "r", "2026-12-01T00:00:00Z", [_cell("t/v1/a", Verdict.PASS, 1.0)])
    (d / "cells" / "t" / "v1" / "a" / "cell.json").write_text('{"key": 3}')
    assert main(["matrix", "publish", str(d), "--no-history"]) == 2


@pytest.mark.parametrize(("name", "worse"), [
    ("boot_s", "higher"), ("move_pages by page count [pages=4] ns per page", "higher"),
    ("dram_share [after]", "lower"), ("something else", None)])
def test_which_way_a_figure_gets_worse(name: str, worse: str | None) -> None:
    assert history.worse_when(name) == worse
