"""JUnit XML for CI: one test suite per scenario, one test case per scenario and variant.

A run whose checks failed is a ``<failure>``; a run that could not complete
(the guest never came up, a step timed out) is an ``<error>``, matching the
exit codes 1 and 2; a scenario that does not apply is ``<skipped>`` with the reason.
A run of the kernel's selftests adds one test case per selftest case
(classname ``SCENARIO.TEST``), so CI pages list them one by one.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from cxlrig.files import write_atomic
from cxlrig.report._util import json_value, showable
from cxlrig.results.model import Results, Run, Verdict

log = logging.getLogger(__name__)

#: Each ``<system-out>`` keeps the tail of a step's output: CI pages choke on megabytes.
OUTPUT_CHARS = 2000


def _seconds(value: float | None) -> str:
    return f"{value or 0.0:.3f}"


def _failure_text(run: Run) -> str:
    lines = []
    for c in run.failed_checks:
        lines.append(c.message)
        if c.field is not None or c.expected is not None or c.actual is not None:
            where = ".".join(p for p in (c.step, c.field) if p)
            lines.append(f"    {where} {c.op or ''}".rstrip())
            lines.append(f"    expected: {json_value(c.expected)}")
            lines.append(f"    actual:   {json_value(c.actual)}")
    return "\n".join(lines)


def _steps_text(run: Run) -> str:
    lines = []
    for i, s in enumerate(run.steps, 1):
        status = "-" if s.status is None else str(s.status)
        took = "" if s.seconds is None else f" {s.seconds:.2f} s"
        user = f" as {s.user}" if s.user else ""
        lines.append(f"[{s.id or i}] {s.kind}{user}: {s.command} -> {status}{took}")
        for name, out in (("stdout", s.stdout), ("stderr", s.stderr)):
            if out.strip():
                tail = out if len(out) <= OUTPUT_CHARS else "..." + out[-OUTPUT_CHARS:]
                lines.append(f"  {name}:")
                lines.extend("    " + line for line in tail.rstrip("\n").splitlines())
    return "\n".join(lines)


def _testcase(run: Run) -> ET.Element:
    case = ET.Element("testcase", {
        "classname": run.scenario,
        "name": f"{run.scenario}[{run.variant}]",
        "time": _seconds(run.seconds),
    })
    props = ET.SubElement(case, "properties")
    for name, value in (("variant", run.variant), ("topology", run.topology),
                        ("predicted", run.predicted), ("point", run.point),
                        ("reviewers", ", ".join(run.reviewers)), ("run_dir", run.run_dir or "")):
        if value:
            ET.SubElement(props, "property", {"name": name, "value": showable(value)})
    if run.verdict is Verdict.FAIL:
        failed = run.failed_checks
        el = ET.SubElement(case, "failure", {
            "message": showable(run.outcome),
            "type": "CheckFailed",
        })
        el.text = showable(_failure_text(run)) if failed else None
    elif run.verdict is Verdict.ERROR:
        el = ET.SubElement(case, "error", {
            "message": showable(run.outcome),
            "type": "RunError",
        })
        el.text = showable(run.error or "")
    elif run.verdict is Verdict.SKIP:
        ET.SubElement(case, "skipped", {"message": showable(run.reason or "")})
    elif run.verdict is Verdict.UNJUDGED:
        # JUnit knows no "ran, not judged": skipped, with what held as the message.
        ET.SubElement(case, "skipped", {"message": showable(run.outcome)})
    steps = _steps_text(run)
    if steps:
        ET.SubElement(case, "system-out").text = showable(steps)
    return case


def _case_testcases(run: Run) -> list[ET.Element]:
    """One test case per selftest case the run's checks report."""
    cases = []
    for c in run.checks:
        if c.case is None:
            continue
        case = ET.Element("testcase", {"classname": f"{run.scenario}.{c.step or 'suite'}",
                                       "name": f"{c.case}[{run.variant}]", "time": "0.000"})
        if c.skipped is not None:
            ET.SubElement(case, "skipped", {"message": showable(c.skipped)})
        elif not c.ok:
            el = ET.SubElement(case, "failure", {"message": showable(c.message),
                                                 "type": "CaseFailed"})
            el.text = showable(c.message)
        cases.append(case)
    return cases


def _count(cases: list[ET.Element], tag: str) -> str:
    return str(sum(c.find(tag) is not None for c in cases))


def to_element(results: Results) -> ET.Element:
    """The whole report as a ``<testsuites>`` element."""
    root = ET.Element("testsuites", {"name": "cxlrig"})
    every: list[ET.Element] = []
    for scenario in results.scenarios:
        runs = results.runs_of(scenario)
        cases = [el for run in runs for el in (_testcase(run), *_case_testcases(run))]
        every += cases
        suite = ET.SubElement(root, "testsuite", {
            "name": scenario,
            "tests": str(len(cases)),
            "failures": _count(cases, "failure"),
            "errors": _count(cases, "error"),
            "skipped": _count(cases, "skipped"),
            "time": _seconds(sum(r.seconds or 0.0 for r in runs)),
        })
        if results.started:
            suite.set("timestamp", results.started)
        suite.extend(cases)
    root.set("tests", str(len(every)))
    root.set("failures", _count(every, "failure"))
    root.set("errors", _count(every, "error"))
    root.set("skipped", _count(every, "skipped"))
    root.set("time", _seconds(sum(r.seconds or 0.0 for r in results.runs)))
    return root


def write(results: Results, path: str | Path) -> Path:
    """Write JUnit XML to ``path`` atomically and return the path."""
    path = Path(path)
    root = to_element(results)
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
    write_atomic(path, data)
    log.info("wrote %s (%s test cases)", path, root.get("tests"))
    return path
