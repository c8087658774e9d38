"""delay=on as a mechanism, with the firmware's accesses (no guest kernel).

topologies/numa-dram2-cxl.yaml has two DRAM nodes; here node 0 is modelled
slower than node 1, so SeaBIOS's own loads and stores to node 0 owe delay.
Every check is on counts and on the plugin's own accounting of what it
owed and slept, never on elapsed time (hosts differ 3x in speed; timing
claims belong in bench/). Phases are cut with the VM stopped (QMP ``stop``)
so that each is wholly on or off, and QMP ``system_reset`` runs the
firmware again to give each phase the same kind of traffic.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxlrig.machine.runner import LaunchError, Machine, RunDir
from cxlrig.plugin import (
    AddressMap,
    Control,
    ControlError,
    Latency,
    MemoryLayout,
    PluginResults,
    load_results,
    map_args,
    plugin_args,
)
from cxlrig.plugin.results import Phase
from cxlrig.qemu.args import Plugin, QemuOptions
from cxlrig.topology import Topology, load

from ..conftest import REPO
from .conftest import FIRMWARE_S, paused_layout

pytestmark = pytest.mark.qemu

#: Node 0 is the slow one; node 1 is the fastest modelled node, so owes nothing.
SLOW, FAST = Latency(0, 150, 200), Latency(1, 100, 100)
EXTRA_READ = SLOW.read_ns - FAST.read_ns
EXTRA_WRITE = SLOW.write_ns - FAST.write_ns



@pytest.fixture(scope="module")
def topo() -> Topology:
    return load(REPO / "topologies" / "numa-dram2-cxl.yaml")


@pytest.fixture(scope="module")
def layout(topo: Topology, tmp_path_factory: pytest.TempPathFactory) -> MemoryLayout:
    """The DRAM ranges as QEMU itself lays them out, read from a paused machine."""
    return paused_layout(topo, tmp_path_factory.mktemp("mtree"))


@pytest.fixture(scope="module")
def amap(layout: MemoryLayout) -> AddressMap:
    assert {r.node for r in layout.dram} == {0, 1}
    return AddressMap(nodes=layout.dram, latencies=(SLOW, FAST))


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # UNIX socket paths are short: keep them out of pytest's deep tmp paths.
    path = Path(tempfile.mkdtemp(prefix="cxlrig-t-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def owed_by_model(phase: Phase) -> int:
    n0 = phase.nodes[0]
    return n0.reads * EXTRA_READ + n0.writes * EXTRA_WRITE


def bound(r: PluginResults) -> int:
    """What a phase cut with the VM stopped may pay beyond (or short of) what it owed."""
    assert r.vcpus and r.delay_min_ns is not None and r.delay_max_overshoot_ns is not None
    return r.vcpus * (r.delay_min_ns + r.delay_max_overshoot_ns)


def check_run_totals(r: PluginResults) -> None:
    assert r.delay_owed_ns is not None and r.delay_debt_ns is not None
    assert r.delay_max_overshoot_ns is not None and r.delay_min_ns is not None and r.vcpus
    # Nothing is lost between phases, and the debt is exactly owed minus slept.
    assert sum(p.delay_owed_ns or 0 for p in r.phases) == r.delay_owed_ns
    assert sum(p.delay_ns for p in r.phases) == r.slept_ns
    assert r.slept_ns == r.delay_owed_ns - r.delay_debt_ns
    # Stopped before quit: every slot's debt is under one threshold, and no
    # more negative than the largest oversleep.
    assert -r.vcpus * r.delay_max_overshoot_ns <= r.delay_debt_ns < r.vcpus * r.delay_min_ns


def test_delay_owes_the_model_and_switches_off_and_on(
        lib: Path, topo: Topology, amap: AddressMap, tmp_path: Path, sockdir: Path) -> None:
    run = RunDir.create(tmp_path, "switch")
    ctl = sockdir / "c.sock"
    args = plugin_args(amap, out=run.path / "plugin.json", control=ctl, delay=True)
    opts = QemuOptions(accel="tcg", single_thread=True, paused=True, plugin=Plugin(lib, args))
    with Machine(topo, opts, run) as m, Control(ctl) as c:
        def slice_(name: str, *, reset: bool) -> None:
            m.qmp("cont")
            if reset:
                m.qmp("system_reset")  # the firmware again, from the top
            time.sleep(FIRMWARE_S)
            m.qmp("stop")
            c.snapshot(name)

        m.qmp("set-action", {"reboot": "reset"})  # the machine runs with -no-reboot
        slice_("on1", reset=False)
        c.delay(False)
        slice_("off", reset=True)
        c.delay(True)
        slice_("on2", reset=True)
    r = load_results(run.path / "plugin.json")

    assert r.exited and r.delay_enabled and r.delay_active
    assert [p.name for p in r.phases] == ["on1", "off", "on2", None]
    on1, off, on2 = r.phase("on1"), r.phase("off"), r.phase("on2")
    for p in (on1, off, on2):
        # Both nodes are touched in every slice; only node 0 owes.
        assert p.nodes[0].total > 0 and p.nodes[1].total > 0, p.name
    for p in (on1, on2):
        assert p.delay_owed_ns == owed_by_model(p) > 0, p.name
        assert abs(p.delay_ns - p.delay_owed_ns) < bound(r), (p.name, p.delay_ns,
                                                               p.delay_owed_ns, bound(r))
    # Off: the same firmware's accesses owe nothing, and nothing is slept
    # (a debt left from on1 is carried over to on2, not paid here).
    assert off.delay_owed_ns == 0 and off.delay_ns == 0
    assert r.delay_sleeps and r.delay_sleeps > 0
    check_run_totals(r)


def test_the_whole_map_can_come_over_the_control_socket(
        lib: Path, topo: Topology, amap: AddressMap, tmp_path: Path, sockdir: Path) -> None:
    # As the orchestrator will: start paused with no node= or lat= at all,
    # add the DRAM map, then let the vCPUs run. Sampled, with a series.
    run = RunDir.create(tmp_path, "added")
    ctl = sockdir / "c.sock"
    args = (("out", str(run.path / "plugin.json")), ("sample", "4"),
            ("interval", "1000000"), ("control", str(ctl)), ("delay", "on"))
    opts = QemuOptions(accel="tcg", single_thread=True, paused=True, plugin=Plugin(lib, args))
    with Machine(topo, opts, run) as m, Control(ctl) as c:
        c.add(map_args(amap))
        m.qmp("cont")
        time.sleep(FIRMWARE_S)
        m.qmp("stop")
        c.snapshot("fw")
    r = load_results(run.path / "plugin.json")

    assert not any(a.startswith(("node=", "lat=")) for a in r.args)
    assert r.added == tuple(f"{k}={v}" for k, v in map_args(amap))
    assert [n.id for n in r.nodes] == [0, 1] and r.nodes[0].read_ns == SLOW.read_ns
    fw = r.phase("fw")
    assert fw.nodes[0].total > 0 and fw.nodes[0].reads % 4 == 0 and r.series
    # Sampled: each counted access owes for the four it stands for, exactly
    # what the (multiplied) counts say.
    assert fw.delay_owed_ns == owed_by_model(fw) > 0
    assert abs(fw.delay_ns - fw.delay_owed_ns) < bound(r)
    check_run_totals(r)


def test_delay_on_with_a_map_but_no_latency_is_still_refused(
        lib: Path, topo: Topology, amap: AddressMap, tmp_path: Path) -> None:
    args = (("out", str(tmp_path / "p.json")),
            *((k, v) for k, v in map_args(amap) if k == "node"), ("delay", "on"))
    opts = QemuOptions(accel="tcg", single_thread=True, plugin=Plugin(lib, args))
    with pytest.raises(LaunchError) as err:
        Machine(topo, opts, RunDir.create(tmp_path, "bad")).launch()
    assert "cxlrig-mem: delay=on needs at least one lat= when node= ranges are given" \
        in err.value.output


@pytest.mark.parametrize("delay", [False, True], ids=["loaded-without", "loaded-with"])
def test_delay_command_errors(lib: Path, topo: Topology, amap: AddressMap, tmp_path: Path,
                              sockdir: Path, delay: bool) -> None:
    run = RunDir.create(tmp_path, "errors")
    ctl = sockdir / "c.sock"
    args = plugin_args(amap, out=run.path / "plugin.json", control=ctl, delay=delay)
    opts = QemuOptions(accel="tcg", single_thread=True, paused=True, plugin=Plugin(lib, args))
    with Machine(topo, opts, run), Control(ctl) as c:
        for bad in ("delay", "delay maybe", "delay on off", "delay ON", "delay "):
            with pytest.raises(ControlError, match="expected on or off"):
                c.command(bad)
        c.delay(False)  # always fine: the state asked for holds
        if delay:
            c.delay(True)
        else:
            with pytest.raises(ControlError, match="delay=on is needed at load"):
                c.delay(True)
        c.flush()
        assert load_results(run.path / "plugin.json").delay_active is delay
        assert c.ping().startswith("cxlrig-mem ")  # errors keep the connection
