"""The plugin's counts against the workload's own, in a real guest.

hotcold touches a hot set bound to the CXL node and a cold set on DRAM and
counts its own loads and stores exactly; the plugin counts every guest
access by physical page. Run through the promotion-loop scenario (move_pages
variant), whose 'before' phase is phase 1 of the workload alone and whose
'after' phase follows the move of the hot set to DRAM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cxlrig.guest.boot import GuestImage
from cxlrig.images.initramfs import build_initramfs
from cxlrig.images.kernel import build_kernel
from cxlrig.plugin import load_results
from cxlrig.results import Step
from cxlrig.scenario.model import PluginSpec, load_scenario
from cxlrig.scenario.plugin import PluginSession
from cxlrig.scenario.runner import run_scenario

from ..conftest import REPO

pytestmark = pytest.mark.guest


def within(got: float, want: float, rel: float = 0.02) -> bool:
    return abs(got - want) <= rel * want


def phase1_sets(steps: dict[str, Step]) -> tuple[dict[str, Any], dict[str, set[int]]]:
    """What the workload says it did in phase 1, and the physical pages it listed,
    per set ("hot", "cold")."""
    final = steps["done"].data["sets"]
    work = {name: final[name]["phases"][0] for name in ("hot", "cold")}
    pas = {name: {int(p["pa"], 16) for p in steps["start"].data["sets"][name]["pages"]}
           for name in ("hot", "cold")}
    return work, pas


def test_guest_plugin_counts_match_the_workload(tmp_path: Path) -> None:
    spec, _ = load_scenario(REPO / "scenarios" / "promotion-loop-virt.yaml")
    image = GuestImage(build_kernel("v2"), build_initramfs())
    res = run_scenario(spec, "v2", image, tmp_path, hooks_factory=PluginSession.for_scenario)
    assert res.verdict == "pass", (res.error, [c.message for c in res.checks if not c.ok])
    steps = {s.id: s for s in res.steps}
    plugin = load_results(tmp_path / res.run_dir / "plugin.json")
    before, after = plugin.phase("before"), plugin.phase("after")

    work, pas = phase1_sets(steps)
    nodes = {"hot": 1, "cold": 0}
    counted = {p.pa: p for p in before.pages}

    on_chosen = total = 0
    for name in ("hot", "cold"):
        pages = [counted[pa] for pa in pas[name] if pa in counted]
        assert len(pages) == len(pas[name]), f"{name}: a page was never counted"
        reads, writes = sum(p.reads for p in pages), sum(p.writes for p in pages)
        # Reads and writes match the workload's own counts within 2%.
        assert within(reads, work[name]["loads"]), (name, reads, work[name]["loads"])
        assert within(writes, work[name]["stores"]), (name, writes, work[name]["stores"])
        on_chosen += sum(p.total for p in pages if p.node == nodes[name])
        total += sum(p.total for p in pages)
    # At least 99% of the workload's accesses land on the nodes it chose.
    assert on_chosen / total >= 0.99

    # Per device: the region interleaves mem0, mem1 every 4 KiB by address.
    hot_pages = [counted[pa] for pa in pas["hot"]]
    expect = {"mem0": 0, "mem1": 0}
    for p in hot_pages:
        expect["mem0" if (p.pa // 4096) % 2 == 0 else "mem1"] += p.total
    for dev, want in expect.items():
        got = before.devices[dev].total
        assert within(got, want), (dev, got, want)

    # The per-page ranking of the CXL node puts the hot set on top.
    top = {p.pa for p in before.top_pages(len(pas["hot"]), node=1)}
    assert top == pas["hot"]

    # After the move, the same workload's accesses are on DRAM.
    assert before.nodes[1].total >= sum(p.total for p in hot_pages)
    assert after.nodes.get(1) is None or after.nodes[1].total < 0.01 * before.nodes[1].total
    assert plugin.bad_index == 0


def test_guest_sampled_counts_estimate_the_workload(tmp_path: Path) -> None:
    """sample=16 on the same scenario, with 16 times the iterations: each set's
    reads and writes within 5% of the workload's own counts, and the CXL
    node's share of the workload within 1 percentage point of the truth."""
    spec, _ = load_scenario(REPO / "scenarios" / "promotion-loop-virt.yaml")
    start = spec.steps[0]
    assert start.id == "start" and start.run and "--iterations 2 " in start.run
    spec = spec.model_copy(update={
        "plugin": PluginSpec(sample=16),
        "steps": [start.model_copy(update={"run": start.run.replace("--iterations 2 ",
                                                                    "--iterations 32 ")}),
                  *spec.steps[1:]]})
    image = GuestImage(build_kernel("v2"), build_initramfs())
    res = run_scenario(spec, "v2", image, tmp_path, hooks_factory=PluginSession.for_scenario)
    assert res.verdict == "pass", (res.error, [c.message for c in res.checks if not c.ok])
    steps = {s.id: s for s in res.steps}
    plugin = load_results(tmp_path / res.run_dir / "plugin.json")
    assert plugin.sample == 16
    before = plugin.phase("before")
    work, pas = phase1_sets(steps)
    counted = {p.pa: p for p in before.pages}
    got: dict[str, int] = {}
    for name in ("hot", "cold"):
        pages = [counted[pa] for pa in pas[name] if pa in counted]
        reads, writes = sum(p.reads for p in pages), sum(p.writes for p in pages)
        assert within(reads, work[name]["loads"], 0.05), (name, reads, work[name]["loads"])
        assert within(writes, work[name]["stores"], 0.05), (name, writes, work[name]["stores"])
        got[name] = reads + writes
    truth = {name: work[name]["loads"] + work[name]["stores"] for name in ("hot", "cold")}
    share, true_share = (d["hot"] / (d["hot"] + d["cold"]) for d in (got, truth))
    assert abs(share - true_share) < 0.01, (share, true_share)


def test_guest_boot_with_plugin_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from cxlrig.cli import main

    monkeypatch.setenv("CXLRIG_RUNS", str(tmp_path))
    status = main(["boot", str(REPO / "topologies" / "default.yaml"), "--accel", "tcg",
                   "--plugin", "--exec", "hotcold --hot-node 1 --cold-node 0 >/dev/null"])
    assert status == 0
    (run,) = [p for p in tmp_path.iterdir() if p.name.find("boot-default") >= 0]
    plugin = load_results(run / "plugin.json")
    assert [p.name for p in plugin.named_phases] == ["boot", "exec"]
    exec_phase = plugin.phase("exec")
    # hotcold's default hot set: 32 pages x 64 slots x 4 iterations x ratio 8.
    assert exec_phase.nodes[1].total >= 32 * 64 * 4 * 8
    capsys.readouterr()
    assert main(["report", str(run), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "phase exec" in out and "mem0" in out and "top 3 pages" in out
