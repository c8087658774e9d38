"""delay=on: the guest's own clock sees each node's modelled extra latency.

The same pointer chase (hotcold chase: every load depends on the one before)
runs on DRAM and on the CXL node, in one boot with the plugin counting and
in one with ``--plugin-delay``. Under TCG a CXL load is MMIO and already far
slower than a DRAM one, so the check is on what the delay adds: per CXL
load, the region's read latency minus DRAM's (the fastest node's), as the
guest measures it; nothing on DRAM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxlrig.plugin import load_results
from cxlrig.topology import load

from ..conftest import REPO

pytestmark = pytest.mark.guest

ACCESSES = 200_000
#: Chases per node and boot; the fastest counts (a CXL load under TCG varies
#: by some 5% from run to run, a tenth of the modelled difference).
REPEAT = 3
TOPOLOGY = REPO / "topologies" / "default.yaml"


def chase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          flag: str) -> tuple[dict[int, float], Path]:
    """Fastest ns per access on nodes 0 and 1 as the guest measured them, and the run dir."""
    from cxlrig.cli import main

    runs = tmp_path / flag.strip("-")
    monkeypatch.setenv("CXLRIG_RUNS", str(runs))
    capsys.readouterr()
    command = "; ".join(f"hotcold chase --node {n} --accesses {ACCESSES}"
                        for _ in range(REPEAT) for n in (0, 1))
    assert main(["boot", str(TOPOLOGY), "--accel", "tcg", flag, "--exec", command]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()
               if line.startswith("{")]
    assert [r["node_requested"] for r in reports] == [0, 1] * REPEAT
    assert all(r["placement_ok"] and r["loads"] == ACCESSES for r in reports)
    (run,) = runs.iterdir()
    return {n: min(r["ns_per_access"] for r in reports if r["node_requested"] == n)
            for n in (0, 1)}, run


def test_delay_is_seen_by_the_guest_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    topo = load(TOPOLOGY)
    dram, cxl_perf = topo.nodes[0].performance, topo.regions[0].performance
    assert None not in (dram.read_latency, dram.write_latency, cxl_perf.read_latency,
                        cxl_perf.write_latency)
    modelled = (cxl_perf.read_latency or 0) - (dram.read_latency or 0)  # 160 ns here
    write_extra = (cxl_perf.write_latency or 0) - (dram.write_latency or 0)

    plain, _ = chase(tmp_path, monkeypatch, capsys, "--plugin")
    slowed, run = chase(tmp_path, monkeypatch, capsys, "--plugin-delay")
    extra = {n: slowed[n] - plain[n] for n in (0, 1)}
    print(f"ns per load, plugin / plugin with delay: {plain} / {slowed}; modelled +{modelled}")

    # The plugin slept what its model owed for the command's accesses.
    results = load_results(run / "plugin.json")
    assert results.delay_enabled
    exec_phase = results.phase("exec")
    cxl = exec_phase.nodes[1]
    owed = cxl.reads * modelled + cxl.writes * write_extra
    assert abs(exec_phase.delay_ns - owed) < 1_000_000 + owed // 50, (exec_phase.delay_ns, owed)

    # The guest saw it: each CXL load about the modelled extra latency slower
    # (debts are paid in 200 us sleeps, so a little of the set-up's is paid
    # inside the timed loop), and DRAM loads not measurably slower.
    assert 0.85 * modelled <= extra[1] <= 1.3 * modelled, (plain, slowed, modelled)
    assert abs(extra[0]) < 0.1 * modelled, (plain, slowed)
