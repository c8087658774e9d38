"""JUnit XML: written for both fixtures, parsed back with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from cxlrig.report import Results, junit, load_results

FIXTURES = Path(__file__).parent / "report_fixtures"


def _write(name: str, tmp_path: Path) -> ET.Element:
    out = junit.write(load_results(FIXTURES / name), tmp_path / "junit.xml")
    assert out == tmp_path / "junit.xml"
    assert [p.name for p in tmp_path.iterdir()] == ["junit.xml"]  # no temporary file left
    return ET.parse(out).getroot()


def test_all_pass(tmp_path: Path) -> None:
    root = _write("all-pass", tmp_path)
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("8", "0", "0")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["unprivileged-caller", "stale-physical-address",
                                               "hot-page-promotion", "migration-cost"]
    cases = root.findall("testsuite/testcase")
    assert len(cases) == 8
    assert cases[0].get("classname") == "unprivileged-caller"
    assert cases[0].get("name") == "unprivileged-caller[v1]"
    assert cases[0].get("time") == "11.800"
    assert not root.findall(".//failure") and not root.findall(".//error")
    props = {p.get("name"): p.get("value") for p in cases[0].iterfind("properties/property")}
    assert props["predicted"] == "succeeds: the page moves (the hole)"
    assert props["run_dir"] == "unprivileged-caller-v1"


def test_fail_and_error(tmp_path: Path) -> None:
    root = _write("fail-and-error", tmp_path)
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("6", "1", "1")
    per_suite = {s.get("name"): (s.get("tests"), s.get("failures"), s.get("errors"))
                 for s in root.iter("testsuite")}
    assert per_suite == {"userns-capability": ("2", "1", "0"), "devdax-page": ("2", "0", "1"),
                         "shared-cow-page": ("2", "0", "0")}

    failures = root.findall(".//testcase/failure/..")
    assert [c.get("name") for c in failures] == ["userns-capability[v2]"]
    failure = failures[0].find("failure")
    assert failure is not None and failure.text is not None
    assert failure.get("message") == "move: first_call.ret == -1 (got 0) (+1 more)"
    assert "move: first_call.ret == -1 (got 0)" in failure.text
    assert 'move: first_call.errno == "EPERM" (got null)' in failure.text
    assert 'expected: "EPERM"' in failure.text and "actual:   null" in failure.text

    errors = root.findall(".//testcase/error/..")
    assert [c.get("name") for c in errors] == ["devdax-page[v1]"]
    error = errors[0].find("error")
    assert error is not None and error.text is not None
    assert error.get("message") == "timed out after 120 s waiting for the guest shell prompt"
    assert "console tail:" in error.text


def test_console_noise_stays_valid_xml(tmp_path: Path) -> None:
    res = load_results(FIXTURES / "fail-and-error")
    run = res.runs[1]
    step = run.steps[1]
    noisy = step.__class__(**{**step.__dict__, "stdout": "a\x00b\x1b[0m\x07 <&>\n"})
    run = run.__class__(**{**run.__dict__, "steps": (noisy,), "error": "bell\x07"})
    root = ET.parse(junit.write(Results(directory=res.directory, version=1, runs=(run,)),
                                tmp_path / "j.xml")).getroot()
    out = root.find(".//system-out")
    assert out is not None and out.text is not None
    assert "a\\x00b\\x1b[0m\\x07 <&>" in out.text
