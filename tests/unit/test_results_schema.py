"""results.json: the published JSON Schema is the one generated from the model,
and what the writer writes validates against it and reads back as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxlrig.results import (
    Access,
    Check,
    Mark,
    Measurement,
    NodeAccess,
    Phase,
    PluginData,
    ResultsWriter,
    Run,
    SeriesPoint,
    Step,
    Verdict,
    json_schema,
    load_results,
)

from ..conftest import REPO

SCHEMA = REPO / "docs" / "results.schema.json"
FIXTURES = Path(__file__).parent / "report_fixtures"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def test_the_published_schema_is_the_generated_one() -> None:
    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("CXLRIG_REGEN_GOLDEN") == "1":
        SCHEMA.write_text(text)
    assert SCHEMA.exists(), f"no {SCHEMA}: run with CXLRIG_REGEN_GOLDEN=1"
    assert SCHEMA.read_text() == text, "docs/results.schema.json is stale: CXLRIG_REGEN_GOLDEN=1"


def validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA), *map(str, files)],
                          capture_output=True, text=True, timeout=120, check=False)


def every_kind_of_run() -> list[Run]:
    plugin = PluginData(
        phases=(Phase("before", {0: NodeAccess(10, 5, 1350), 1: NodeAccess(3, 1, 1050)},
                      {"mem0": Access(2, 1), "mem1": Access(1, 0)}, 0.79),
                Phase(None, {0: NodeAccess(1, 0)}, {})),
        series=(SeriesPoint(1e6, "ns", {0: Access(4, 2)}),),
        marks=(Mark("before", 1e6),), sample=16)
    step = Step(id="move", kind="run", command="mpp phys", user="user", status=0, seconds=0.5,
                stdout="{}", data={"first_call": {"errno": "EPERM", "status": [-1]}})
    return [
        Run("promotion", "v1", Verdict.PASS, title="t", reviewers=("A", "B"), topology="default",
            seconds=12.5, run_dir="promotion-v1", steps=(step,),
            checks=(Check(True, "move: first_call.errno == 'EPERM'", "move", "first_call.errno",
                          "equals", "EPERM", "EPERM"),),
            measurements=(Measurement("cost", 1.0, 250.0, "pages", "ns", 200.0, 300.0),),
            plugin=plugin),
        Run("promotion", "v2", Verdict.FAIL, seconds=3.0, run_dir="promotion-v2",
            checks=(Check(False, "move: x is 1, expected == 2", "move", "x", "equals", 2, 1),)),
        Run("bad-qmp", "v1", Verdict.ERROR, run_dir="bad-qmp-v1",
            error="step 'q': QMP no-such: CommandNotFound", error_step="'q'",
            traceback="traceback.txt"),
        Run("devdax", "debug", Verdict.SKIP, reason="the scenario lists only v1, v2"),
    ]


def test_what_the_writer_writes_validates_and_reads_back(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path)
    runs = every_kind_of_run()
    for run in runs:
        writer.add(run)
    path = writer.write()
    res = validate(path)
    assert res.returncode == 0, res.stdout + res.stderr
    back = load_results(tmp_path)
    assert back.runs == tuple(runs)
    assert back.exit_code == 2 and back.count(Verdict.SKIP) == 1
    assert back.run("devdax", "debug").outcome == "skipped: the scenario lists only v1, v2"  # type: ignore[union-attr]


@pytest.mark.parametrize("fixture", ["all-pass", "fail-and-error"])
def test_results_from_before_version_2_still_validate(fixture: str) -> None:
    res = validate(FIXTURES / fixture / "results.json")
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_schema_refuses_what_the_reader_refuses(tmp_path: Path) -> None:
    doc = json.loads((FIXTURES / "all-pass" / "results.json").read_text())
    doc["runs"][0]["verdict"] = "flaky"
    del doc["runs"][1]["variant"]
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps(doc))
    res = validate(bad)
    assert res.returncode == 1
    assert "flaky" in res.stdout and "variant" in res.stdout, res.stdout
