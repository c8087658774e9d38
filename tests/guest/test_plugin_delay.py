"""delay=on: what the plugin owed and paid, and that the guest's own clock saw it.

No assertion here compares two timings or bounds a timing from above: on a
slow or busy host every guest-timed loop only gets longer. What is asserted:

- the mechanism, exactly: in a phase with the delay on, what the plugin owed
  equals the model's extra latency for the accesses it counted (CXL reads and
  writes times the region's latency minus DRAM's; DRAM, the fastest node,
  owes nothing); what it slept is within the bound its README states
  (per vCPU: one payment threshold plus the largest oversleep); with the
  delay switched off over the control socket, it owes and sleeps nothing;
- the guest-visible effect, one-sided: the guest's own timing of a pointer
  chase on the CXL node with the delay on is at least the model's extra time
  for the chase's loads, less what may still be owed at either end. Host
  noise can only add to a guest-measured time, so it cannot flip this.

How close the guest-seen extra latency comes to the model (a paired on/off
comparison inside one boot, median and spread) is measured by bench/delay.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cxlrig.plugin import load_results
from cxlrig.plugin.results import Phase
from cxlrig.scenario.model import PluginSpec
from cxlrig.scenario.plugin import PluginSession
from cxlrig.topology import load

from ..conftest import REPO
from .conftest import Boot, run_json

pytestmark = pytest.mark.guest

ACCESSES = 200_000
TOPOLOGY = REPO / "topologies" / "default.yaml"


def test_guest_delay_owed_paid_and_seen_by_the_guest_clock(boot: Boot, tmp_path: Path) -> None:
    topo = load(TOPOLOGY)
    dram, cxl_perf = topo.nodes[0].performance, topo.regions[0].performance
    assert None not in (dram.read_latency, dram.write_latency, cxl_perf.read_latency,
                        cxl_perf.write_latency)
    read_extra = (cxl_perf.read_latency or 0) - (dram.read_latency or 0)  # 160 ns here
    write_extra = (cxl_perf.write_latency or 0) - (dram.write_latency or 0)

    run_path = tmp_path / "delay"
    run_path.mkdir()
    session = PluginSession(PluginSpec(delay=True), topo, run_path)
    chases: dict[str, dict[str, object]] = {}
    with boot(str(TOPOLOGY), "v2", plugin=session.plugin,
              before_start=session.before_start) as guest:
        session.attach(guest)
        control = session.control
        assert control is not None
        cxl_node = guest.regions[0].node

        def phase(name: str, node: int, on: bool) -> None:
            # Switch and cut with the vCPUs stopped: each phase is wholly on or off.
            guest.machine.qmp("stop")
            control.delay(on)
            control.snapshot(f"before-{name}")
            guest.machine.qmp("cont")
            chases[name] = run_json(guest.session,
                                    f"hotcold chase --node {node} --accesses {ACCESSES}")
            guest.machine.qmp("stop")
            control.snapshot(name)
            guest.machine.qmp("cont")

        phase("cxl-on", cxl_node, True)
        phase("dram-on", 0, True)
        phase("cxl-off", cxl_node, False)
    session.summary()

    for name, report in chases.items():
        assert report["placement_ok"] and report["loads"] == ACCESSES, (name, report)
    res = load_results(run_path / "plugin.json")
    assert res.delay_enabled and res.vcpus and res.delay_min_ns is not None
    overshoot = res.delay_max_overshoot_ns or 0
    bound = res.vcpus * (res.delay_min_ns + overshoot)

    def owed_by_model(ph: Phase) -> int:
        cxl = ph.nodes.get(cxl_node)
        return 0 if cxl is None else cxl.reads * read_extra + cxl.writes * write_extra

    on = res.phase("cxl-on")
    assert on.nodes[cxl_node].reads >= ACCESSES
    assert on.delay_owed_ns == owed_by_model(on) > 0
    assert abs(on.delay_ns - on.delay_owed_ns) <= bound, (on.delay_ns, on.delay_owed_ns, bound)

    dram_on = res.phase("dram-on")
    assert dram_on.nodes[0].reads >= ACCESSES
    # DRAM is the fastest node: its accesses owe nothing, only stray CXL ones do.
    assert dram_on.delay_owed_ns == owed_by_model(dram_on)
    assert dram_on.delay_owed_ns < on.delay_owed_ns // 100

    off = res.phase("cxl-off")
    assert off.nodes[cxl_node].reads >= ACCESSES
    assert off.delay_owed_ns == 0 and off.delay_ns == 0

    # The guest's clock saw at least the modelled extra time of the chase's own
    # loads: a lower bound no host slowness can break (a slow host only adds).
    loop_ns = int(chases["cxl-on"]["elapsed_ns"])  # type: ignore[call-overload]
    assert loop_ns >= ACCESSES * read_extra - bound, (loop_ns, ACCESSES * read_extra, bound)
    seen = (loop_ns - int(chases["cxl-off"]["elapsed_ns"])) / ACCESSES  # type: ignore[call-overload]
    print(f"modelled +{read_extra} ns per CXL load; this boot's on-off difference "
          f"{seen:+.0f} ns (one pair, for information: bench/delay.py measures it)")
