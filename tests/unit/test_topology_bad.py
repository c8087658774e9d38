"""Each bad topology file gives exactly the messages in its .expected file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxlrig.cli import main

from ..conftest import REPO

BAD = sorted((REPO / "tests" / "unit" / "bad").glob("*.yaml"))


def test_there_are_at_least_30_bad_files() -> None:
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_file_message(path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    rel = path.relative_to(REPO)
    status = main(["validate", str(rel)])
    got = capsys.readouterr()
    assert status == 1
    expected = path.with_suffix(".expected").read_text()
    assert got.out == expected
    assert "Traceback" not in got.out + got.err
    # Every line has the FILE:LINE:COL: shape.
    for line in got.out.splitlines():
        file, line_no, col, _ = line.split(":", 3)
        assert file == str(rel) and int(line_no) >= 1 and int(col) >= 1


@pytest.mark.parametrize("path", sorted((REPO / "topologies").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_topologies_are_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_validate_reports_every_file(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    files = [str(p.relative_to(REPO)) for p in BAD[:3]] + ["topologies/default.yaml"]
    assert main(["validate", *files]) == 1
    out = capsys.readouterr().out
    for f in files[:3]:
        assert f"{f}:" in out
    assert "topologies/default.yaml: ok" in out


def test_missing_file_is_a_located_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/nonexistent/topo.yaml"]) == 1
    assert capsys.readouterr().out.startswith("/nonexistent/topo.yaml:1:1: cannot read")
