"""Every reviewer scenario on v1 and v2 gives the verdict the thread
predicts; a wrong expectation fails naming step, expected and actual."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cxlrig.cli import main

from ..conftest import REPO

pytestmark = pytest.mark.guest

SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))


def test_guest_every_scenario_passes_on_v1_and_v2(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    status = main(["run", *map(str, SCENARIOS), "--results", str(results)])
    out = capsys.readouterr().out
    doc = json.loads((results / "results.json").read_text())
    verdicts = {(r["scenario"], r["variant"]): r["verdict"] for r in doc["runs"]}
    failing = {k: v for k, v in verdicts.items() if v != "pass"}
    assert status == 0 and not failing, f"{failing}\n{out}"
    assert len(SCENARIOS) >= 12
    assert {v for _, v in verdicts} == {"v1", "v2"}
    assert len(verdicts) == 2 * len(SCENARIOS)
    # What the runner wrote is what the published schema describes.
    schema = subprocess.run([str(Path(sys.executable).with_name("check-jsonschema")),
                             "--schemafile", str(REPO / "docs" / "results.schema.json"),
                             str(results / "results.json")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert schema.returncode == 0, schema.stdout + schema.stderr
    # The reports are there and agree: one JUnit test case per run and one per
    # selftest case (mm-selftests: five migration.c cases on each variant, v2's
    # six move_phys_pages cases, v1's skip of the test its tree lacks).
    suites = ET.parse(results / "junit.xml").getroot()
    cases = [c for r in doc["runs"] for c in r["checks"] if c.get("case")]
    selftest = [c for r in doc["runs"] if r["scenario"] == "mm-selftests"
                for c in r["checks"] if c.get("case")]
    assert len(selftest) == len(cases) == 17, cases
    assert int(suites.get("tests", 0)) == len(verdicts) + len(cases)
    names = {c.get("name") for c in suites.iter("testcase")}
    assert {"migration.private_anon[v1]", "move_phys_pages.ping_pong[v2]",
            "move_phys_pages.user_namespace[v2]"} <= names, names
    page = (results / "report.html").read_text()
    assert "<svg" in page and "promotion-loop-phys" in page
    # The promotion loop raised the workload's DRAM share by a wide margin.
    for run in doc["runs"]:
        if run["scenario"].startswith("promotion-loop"):
            marks = {s["id"]: s["data"] for s in run["steps"] if s["kind"] == "mark"}
            gain = marks["after"]["workload_dram_share"] - marks["before"]["workload_dram_share"]
            assert gain > 0.5, (run["scenario"], run["variant"], gain)


def test_guest_wrong_expectation_fails_with_step_expected_actual(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (REPO / "scenarios" / "unprivileged-caller.yaml").read_text()
    wrong = text.replace("{step: move, field: first_call.errno, equals: EPERM}",
                         "{step: move, field: first_call.errno, equals: EACCES}")
    assert wrong != text
    path = tmp_path / "wrong.yaml"
    path.write_text(wrong)
    results = tmp_path / "results"
    status = main(["run", str(path), "--variant", "v2", "--results", str(results)])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL  unprivileged-caller on v2" in out
    assert "move: first_call.errno is 'EPERM', expected == 'EACCES'" in out
    failures = [f.get("message", "") + (f.text or "")
                for f in ET.parse(results / "junit.xml").getroot().iter("failure")]
    assert any("first_call.errno is 'EPERM'" in f for f in failures), failures
