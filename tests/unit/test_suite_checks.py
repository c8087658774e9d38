"""Kernel selftests as checks: one per TAP case, in results.json, JUnit and the report."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from cxlrig.report import junit
from cxlrig.report.html import page
from cxlrig.results import ResultsWriter, Run, Step, Verdict, load_results
from cxlrig.scenario.model import load_scenario
from cxlrig.scenario.runner import suite_checks
from cxlrig.scenario.tap import parse
from cxlrig.topology import load

from ..conftest import REPO
from .test_tap import MIGRATION, STDERR


def _step(stdout: str, stderr: str = "", status: int = 0, sid: str = "migration") -> Step:
    tap = parse(stdout, stderr)
    data = {"test": "mm/migration", "plan": tap.plan, "bailed": tap.bailed,
            "missing": list(tap.missing),
            "cases": [{"number": c.number, "name": c.name, "result": c.result,
                       "detail": c.detail} for c in tap.cases]}
    return Step(id=sid, kind="kselftest", command="cd /opt/kselftest/mm && ./migration",
                status=status, stdout=stdout, stderr=stderr, data=data)


def test_one_check_per_case() -> None:
    checks = suite_checks(_step(MIGRATION, STDERR, status=1))
    assert [(c.case, c.ok, c.skipped is not None) for c in checks] == [
        ("migration.private_anon", True, False), ("migration.shared_anon", True, False),
        ("migration.private_anon_thp", True, True), ("migration.shared_anon_thp", True, False),
        ("migration.private_anon_htlb", False, False),
        ("migration.shared_anon_htlb", False, False)]
    failed = checks[4]
    assert failed.message == ("migration.private_anon_htlb: not ok: migration.c:268:"
                              "private_anon_htlb:Expected ptr (18446744073709551615) != "
                              "MAP_FAILED")
    assert (failed.step, failed.op, failed.expected, failed.actual) == \
        ("migration", "tap", "ok", "not ok")
    assert checks[2].skipped == "Not enough threads or NUMA nodes available"


def test_a_test_that_died_mid_plan_fails_for_the_cases_it_never_reported() -> None:
    checks = suite_checks(_step("1..3\nok 1 a\n", "Segmentation fault", status=139))
    assert [(c.case, c.ok) for c in checks] == [("a", True), ("mm/migration #2", False),
                                                 ("mm/migration #3", False)]
    assert "never reported" in checks[1].message and "exit status 139" in checks[1].message


def test_a_bad_exit_after_every_case_passed_is_a_failure() -> None:
    checks = suite_checks(_step("1..1\nok 1 a\n", "Segmentation fault", status=139))
    assert [(c.case, c.ok) for c in checks] == [("a", True), ("mm/migration", False)]
    assert checks[-1].message.startswith("mm/migration: exited 139 after its cases")


def test_no_tap_is_a_failure_naming_the_status() -> None:
    (only,) = suite_checks(_step("", "exec format error", status=126))
    assert not only.ok and "exited 126 with no TAP case" in only.message


def test_all_skipped_with_ksft_skip_passes() -> None:
    checks = suite_checks(_step("1..1\nok 1 a # SKIP no NUMA\n", status=4))
    assert [(c.ok, c.skipped) for c in checks] == [(True, "no NUMA")]


def test_a_test_the_tree_lacks_is_a_skip_one_that_did_not_build_a_failure() -> None:
    missing = Step(id="mpp", kind="kselftest", command="mm/move_phys_pages",
                   data={"absent": "missing", "why": "not in this kernel's source tree"})
    broken = Step(id="mpp", kind="kselftest", command="mm/move_phys_pages",
                  data={"absent": "broken", "why": "did not build: error: x undeclared"})
    (skip,) = suite_checks(missing)
    (fail,) = suite_checks(broken)
    assert skip.ok and skip.skipped == "not in this kernel's source tree"
    assert not fail.ok and fail.skipped is None and "did not build" in fail.message


def _results(tmp_path: Path) -> Path:
    step = _step(MIGRATION, STDERR, status=1)
    checks = tuple(suite_checks(step))
    writer = ResultsWriter(tmp_path)
    writer.add(Run(scenario="mm-selftests", variant="v2", verdict=Verdict.FAIL,
                   topology="default", seconds=150.0, steps=(step,), checks=checks))
    writer.write()
    return tmp_path


def test_cases_survive_results_json(tmp_path: Path) -> None:
    run, = load_results(_results(tmp_path)).runs
    assert [c.case for c in run.checks][:2] == ["migration.private_anon", "migration.shared_anon"]
    assert run.checks[2].skipped == "Not enough threads or NUMA nodes available"


def test_junit_lists_each_case(tmp_path: Path) -> None:
    results = load_results(_results(tmp_path))
    root = ET.parse(junit.write(results, tmp_path / "junit.xml")).getroot()
    cases = root.findall("testsuite/testcase")
    assert [c.get("name") for c in cases] == [
        "mm-selftests[v2]", "migration.private_anon[v2]", "migration.shared_anon[v2]",
        "migration.private_anon_thp[v2]", "migration.shared_anon_thp[v2]",
        "migration.private_anon_htlb[v2]", "migration.shared_anon_htlb[v2]"]
    assert {c.get("classname") for c in cases[1:]} == {"mm-selftests.migration"}
    assert cases[3].find("skipped").get("message") == \
        "Not enough threads or NUMA nodes available"  # type: ignore[union-attr]
    assert cases[5].find("failure") is not None and cases[6].find("failure") is not None
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("7", "3", "1")
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("7", "3")


def test_the_report_shows_skipped_cases_apart(tmp_path: Path) -> None:
    html = page(load_results(_results(tmp_path)))
    assert "Skipped cases (1)" in html and "Failed checks (2)" in html


def test_the_scenario_raises_the_vcpus_on_any_topology() -> None:
    spec, _ = load_scenario(REPO / "scenarios" / "mm-selftests.yaml")
    assert spec.kselftests == ("mm/migration", "mm/move_phys_pages")
    topo = load(REPO / "topologies" / "numa-dram2-cxl.yaml")
    booted = spec.machine(topo)
    assert booted.cpus == 4
    assert [n.cpus for n in booted.nodes] == [(0, 2, 3), (1,)]
    one = load(REPO / "topologies" / "direct-volatile.yaml")
    assert spec.machine(one).nodes[0].cpus == (0, 1, 2, 3)
    big = spec.machine(spec.machine(one).with_cpus(8))
    assert big.cpus == 8  # never lowered
