"""Scenario files: validation with located messages, templates, expectations."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxlrig.results import Step
from cxlrig.scenario.model import ExpectSpec, ScenarioError, load_scenario
from cxlrig.scenario.runner import Context, check, expand_steps, lookup
from cxlrig.topology import load

from ..conftest import REPO

SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenarios_are_valid(path: Path) -> None:
    spec, _ = load_scenario(path)
    assert spec.name == path.stem
    assert spec.variants == ["v1", "v2"]
    assert set(spec.predicted) == {"v1", "v2"}, "each scenario states the thread's verdicts"
    assert (REPO / "topologies" / f"{spec.topology}.yaml").exists()


BAD = {
    "name: x\ntitle: t\npoint: p\nplugin: {}\nsteps:\n  - {tiering: {policy: lru}}\n":
        "x.yaml:6:16: steps[0].tiering.policy: must be 'none', 'move_phys_pages', "
        "'move_pages', 'numa_balancing' or 'damon'",
    "name: x\ntitle: t\npoint: p\nplugin: {}\nsteps:\n"
    "  - {tiering: {policy: none, intervals: 4, swap_at: 5}}\n":
        "x.yaml:6:6: steps[0].tiering: swap_at 5 is after the last interval (4)",
    "name: x\ntitle: t\npoint: p\nsteps:\n  - {tiering: {policy: none}}\n":
        "x.yaml:5:6: steps[0].tiering: a 'tiering' step needs the plugin: add 'plugin: {}'",
    "name: x\ntitle: t\npoint: p\nsteps:\n  - run: 'true'\n    mark: m\n":
        "x.yaml:5:5: steps[0]: a step needs exactly one of run, kselftest, mark, qmp, "
        "promote, inject, dcd, hotplug, tiering (has run, mark)",
    "name: x\ntitle: t\npoint: p\nsteps:\n  - {kselftest: mm/gup_test}\n":
        "x.yaml:5:6: steps[0].kselftest: 'mm/gup_test' is not among the selftests the rig "
        "builds (mm/migration, mm/move_phys_pages; the list: ",
    "name: x\ntitle: t\npoint: p\ncpus: 100\nsteps:\n  - run: 'true'\n":
        "x.yaml:4:1: cpus: must be less than or equal to 64",
    "name: x\ntitle: t\npoint: p\nsteps:\n  - {id: a, run: 'true'}\nexpect:\n  v3: []\n":
        "x.yaml:7:3: expect.v3: 'v3' is not a variant (debug, v1, v2) or 'all'",
    "name: x\ntitle: t\npoint: p\nsteps:\n  - {id: a, run: 'true'}\nexpect:\n  all:\n"
    "    - {step: b, equals: 0}\n":
        "x.yaml:8:8: expect.all[0].step: no step 'b' (known: a)",
    "name: x\ntitle: t\npoint: p\nsteps:\n  - {id: a, run: 'true', users: root}\n":
        "x.yaml:5:26: steps[0].users: unknown key (allowed here: id, run, kselftest, args, mark, "
        "qmp, promote, inject, dcd, hotplug, tiering, user, json, check",
    "name: x\ntitle: t\nsteps: []\n":
        "x.yaml:1:1: point: required key is missing",
    "name: x\ntitle: t\npoint: p\nplugin: {delays: true}\nsteps:\n  - run: 'true'\n":
        "x.yaml:4:10: plugin.delays: unknown key (allowed here: sample, interval, "
        "interval_unit, delay)",
    "name: x\ntitle: t\npoint: p\nplugin: {delay: maybe}\nsteps:\n  - run: 'true'\n":
        "x.yaml:4:10: plugin.delay: must be a valid boolean",
}


@pytest.mark.parametrize("text", list(BAD), ids=range(len(BAD)))
def test_bad_scenarios_are_located(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    first = str(info.value.problems[0]).replace(str(tmp_path) + "/", "")
    assert first.startswith(BAD[text]), first


def test_templates_and_checks() -> None:
    topo = load(REPO / "topologies" / "numa-dram2-cxl.yaml")
    ctx = Context(topo, "v2")
    assert ctx.vars["cxl_node"] == 2
    ctx.steps["a"] = Step(id="a", kind="run", command="", user="root", status=0, seconds=0.1,
                          stdout="out", data={"pages": [{"pa": "0x1000", "node": 2}], "n": 3})
    assert ctx.expand("mpp phys --pa ${a.pages[0].pa} --to ${dram_node}") == \
        "mpp phys --pa 0x1000 --to 0"
    assert ctx.resolve("${a.n}") == 3
    assert lookup({"x": [{"y": 5}]}, "x[0].y") == 5
    ok = check(ExpectSpec(step="a", field="pages[0].node", equals="${cxl_node}"), ctx)
    assert ok.ok and ok.message == "a: pages[0].node == 2"
    bad = check(ExpectSpec(step="a", field="n", less=2, why="few"), ctx)
    assert not bad.ok and bad.message == "a: n is 3, expected < 2 (few)"
    missing = check(ExpectSpec(step="a", field="nope", equals=1), ctx)
    assert not missing.ok and "no field 'nope'" in missing.message


def test_foreach_unrolls_and_variant_filter() -> None:
    spec, _ = load_scenario(REPO / "scenarios" / "migration-cost.yaml")
    steps = expand_steps(spec.steps, "v1")
    assert [v for _, v in steps][:4] == [{"pages": 1}, {"pages": 4}, {"pages": 16},
                                         {"pages": 64}]
