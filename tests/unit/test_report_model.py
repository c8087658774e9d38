"""Reading results.json: the two fixture directories, then damaged copies of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cxlrig.report import ResultsFormatError, Verdict, load_results, parse_results

FIXTURES = Path(__file__).parent / "report_fixtures"
ALL_PASS = FIXTURES / "all-pass"
FAIL_AND_ERROR = FIXTURES / "fail-and-error"


def _doc(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "results.json").read_text())
    return data


def _write(tmp_path: Path, doc: Any) -> Path:
    (tmp_path / "results.json").write_text(json.dumps(doc))
    return tmp_path


def test_all_pass_loads_with_plugin_data_and_measurements() -> None:
    res = load_results(ALL_PASS)
    assert res.version == 1
    assert res.directory == ALL_PASS
    assert res.started == "2026-11-26T01:50:00Z"
    assert len(res.runs) == 8
    assert res.scenarios == ("unprivileged-caller", "stale-physical-address",
                             "hot-page-promotion", "migration-cost")
    assert res.variants == ("v1", "v2")
    assert res.count(Verdict.PASS) == 8
    assert res.exit_code == 0

    hot = res.run("hot-page-promotion", "v1")
    assert hot is not None and hot.plugin is not None
    assert [p.name for p in hot.plugin.phases] == ["before", "after", None]
    assert hot.plugin.phases[0].dram_share == pytest.approx(0.352)
    assert hot.plugin.phases[2].dram_share is None
    assert set(hot.plugin.phases[0].nodes) == {0, 1}
    assert hot.plugin.phases[0].nodes[0].modelled_ns is not None
    assert hot.plugin.phases[0].devices["mem0"].total > 0
    assert len(hot.plugin.series) == 48
    assert hot.plugin.series[0].unit == "insn"
    assert [m.name for m in hot.plugin.marks] == ["before", "after"]
    assert [s.kind for s in hot.steps] == ["run", "mark", "promote", "mark"]

    cost = res.run("migration-cost", "v2")
    assert cost is not None and cost.plugin is None
    series = {m.series for m in cost.measurements}
    assert series == {"move_phys_pages time per page", "move_pages time per page",
                      "move_phys_pages time per page vs mappers"}
    first = cost.measurements[0]
    assert isinstance(first.x, float) and first.x == 1.0  # JSON integers read as numbers
    assert first.y is not None and first.min is not None and first.max is not None
    assert first.min <= first.y <= first.max


def test_fail_and_error_loads_and_tolerates_a_minimal_run() -> None:
    res = load_results(str(FAIL_AND_ERROR))  # a str is accepted too
    assert (res.count(Verdict.PASS), res.count(Verdict.FAIL), res.count(Verdict.ERROR)) == (4, 1, 1)
    assert res.exit_code == 2
    assert all(r.plugin is None for r in res.runs)

    failed = res.run("userns-capability", "v2")
    assert failed is not None and failed.verdict is Verdict.FAIL
    assert [c.field for c in failed.failed_checks] == ["first_call.ret", "first_call.errno"]
    assert failed.failed_checks[1].expected == "EPERM"
    assert failed.failed_checks[1].actual is None
    assert failed.outcome == "move: first_call.ret == -1 (got 0) (+1 more)"

    error = res.run("devdax-page", "v1")
    assert error is not None and error.verdict is Verdict.ERROR
    assert error.outcome == "timed out after 120 s waiting for the guest shell prompt"
    assert error.steps[0].status is None

    minimal = res.run("shared-cow-page", "v2")
    assert minimal is not None
    assert (minimal.title, minimal.predicted, minimal.reviewers) == ("", "", ())
    assert minimal.seconds is None
    assert minimal.measurements == () and minimal.plugin is None
    assert minimal.steps[0].kind == "run" and minimal.steps[0].status is None
    assert minimal.outcome == "as predicted"


def test_what_the_runner_may_leave_empty_is_accepted() -> None:
    """Steps without an id, data of any JSON type, values it could not read, no run_dir."""
    doc = _doc(ALL_PASS)
    run = doc["runs"][6]
    run["steps"][0].update(id=None, data=[1, 2], user="")
    run["steps"][1].update(data="text")
    run["measurements"][0].update(y=None, min=None, max=None)
    run["run_dir"] = ""
    res = parse_results(doc, ALL_PASS)
    cost = res.runs[6]
    assert cost.steps[0].id == "" and cost.steps[0].data == [1, 2]
    assert cost.steps[1].data == "text"
    assert cost.measurements[0].y is None
    assert cost.run_dir is None


def test_a_check_without_a_message_gets_one() -> None:
    doc = _doc(FAIL_AND_ERROR)
    del doc["runs"][1]["checks"][0]["message"]
    res = parse_results(doc, FAIL_AND_ERROR)
    run = res.run("userns-capability", "v2")
    assert run is not None
    assert run.failed_checks[0].message == "move.first_call.ret equals -1: got 0"


def test_a_later_run_of_the_same_scenario_and_variant_wins() -> None:
    doc = _doc(FAIL_AND_ERROR)
    rerun = copy.deepcopy(doc["runs"][2])
    rerun["verdict"], rerun["error"] = "pass", None
    doc["runs"].append(rerun)
    res = parse_results(doc, FAIL_AND_ERROR)
    run = res.run("devdax-page", "v1")
    assert run is not None and run.verdict is Verdict.PASS
    assert len(res.runs_of("devdax-page")) == 3


def test_missing_required_keys_are_all_named_with_the_file(tmp_path: Path) -> None:
    doc = _doc(FAIL_AND_ERROR)
    del doc["runs"][0]["scenario"]
    del doc["runs"][3]["verdict"]
    doc["runs"][4]["checks"][1].pop("ok")
    doc["runs"][4]["measurements"] = [{"series": "s", "y": 1}]
    with pytest.raises(ResultsFormatError) as info:
        load_results(_write(tmp_path, doc))
    err = info.value
    path = tmp_path / "results.json"
    assert err.path == path
    assert err.problems == (
        "runs[0].scenario: required key is missing",
        "runs[3].verdict: required key is missing",
        "runs[4].checks[1].ok: required key is missing",
        "runs[4].measurements[0].x: required key is missing",
    )
    assert str(err).splitlines()[0] == f"{path}: runs[0].scenario: required key is missing"
    assert err.exit_code == 2


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d.pop("runs"), "runs: required key is missing"),
    (lambda d: d.pop("version"), "version: required key is missing"),
    (lambda d: d.__setitem__("runs", {}), "runs: expected a list, got an object {}"),
    (lambda d: d["runs"][0].__setitem__("verdict", "flaky"),
     "runs[0].verdict: unknown verdict 'flaky' "
     "(expected one of pass, fail, error, skip, unjudged)"),
    (lambda d: d["runs"][0].__setitem__("seconds", "12"),
     'runs[0].seconds: expected a number, got a string "12"'),
    (lambda d: d["runs"][0]["steps"][0].__setitem__("status", True),
     "runs[0].steps[0].status: expected an integer, got a boolean true"),
    (lambda d: d["runs"][0]["checks"][0].__setitem__("ok", 1),
     "runs[0].checks[0].ok: expected true or false, got an integer 1"),
    (lambda d: d["runs"][0].__setitem__("run_dir", "../elsewhere"),
     "runs[0].run_dir: must be a relative path inside the results directory, got '../elsewhere'"),
    (lambda d: d["runs"][0].__setitem__("run_dir", "/tmp/x"),
     "runs[0].run_dir: must be a relative path inside the results directory, got '/tmp/x'"),
    (lambda d: d["runs"][0].__setitem__("reviewers", ["a", 2]),
     "runs[0].reviewers: expected a list of strings"),
    (lambda d: d["runs"].append(3), "runs[6]: expected an object, got an integer"),
    (lambda d: d["runs"][0].__setitem__("plugin", {"phases": [{"nodes": {"dram": {}}}]}),
     "runs[0].plugin.phases[0].nodes.dram: a node id must be an integer"),
    (lambda d: d["runs"][0].__setitem__("plugin", {"phases": [{"dram_share": 1.5}]}),
     "runs[0].plugin.phases[0].dram_share: must be a fraction between 0 and 1, got 1.5"),
    (lambda d: d["runs"][0].__setitem__("plugin", {"series": [{"unit": "ns"}]}),
     "runs[0].plugin.series[0].t: required key is missing"),
])
def test_bad_values_are_named_by_key(tmp_path: Path, change: Any, problem: str) -> None:
    doc = _doc(FAIL_AND_ERROR)
    change(doc)
    with pytest.raises(ResultsFormatError) as info:
        load_results(_write(tmp_path, doc))
    assert info.value.problems == (problem,)


def test_an_unknown_version_is_refused_before_anything_else(tmp_path: Path) -> None:
    with pytest.raises(ResultsFormatError) as info:
        load_results(_write(tmp_path, {"version": 4, "runs": "whatever"}))
    assert info.value.problems == ("version: unknown version 4 "
                                   "(this cxlrig reads versions 1, 2 and 3)",)


def test_not_json_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"version": 1,\n "runs": [,]}\n')
    with pytest.raises(ResultsFormatError) as info:
        load_results(tmp_path)
    assert info.value.problems[0].startswith("line 2, column 11: not JSON:")


def test_not_an_object_at_the_top(tmp_path: Path) -> None:
    with pytest.raises(ResultsFormatError, match="expected a JSON object at the top, got a list"):
        load_results(_write(tmp_path, []))


def test_a_directory_without_results(tmp_path: Path) -> None:
    with pytest.raises(ResultsFormatError) as info:
        load_results(tmp_path)
    assert info.value.path == tmp_path / "results.json"
    assert info.value.problems == ("no such file (is this a results directory?)",)


def test_results_are_frozen() -> None:
    res = load_results(ALL_PASS)
    with pytest.raises(AttributeError):
        res.runs[0].verdict = Verdict.FAIL  # type: ignore[misc]
