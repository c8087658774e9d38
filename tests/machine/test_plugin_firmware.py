"""The plugin in real QEMU, firmware only (SeaBIOS touches DRAM; no guest kernel).

Every test builds the plugin (cached), starts topologies/default.yaml under
single-threaded TCG with it, lets the firmware run, quits over QMP and reads
what the plugin wrote.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cxlrig.machine.runner import LaunchError, Machine, RunDir
from cxlrig.plugin import (
    AddressMap,
    Control,
    ControlError,
    Latency,
    NodeRange,
    PluginResults,
    RegionDecode,
    address_map,
    load_results,
    map_args,
    plugin_args,
)
from cxlrig.qemu.args import Plugin, QemuOptions
from cxlrig.topology import Topology, load

from ..conftest import REPO
from .conftest import FIRMWARE_S, paused_layout

pytestmark = pytest.mark.qemu

GiB = 1 << 30



@pytest.fixture(scope="module")
def topo() -> Topology:
    return load(REPO / "topologies" / "default.yaml")


@pytest.fixture(scope="module")
def dram_map(topo: Topology, tmp_path_factory: pytest.TempPathFactory) -> AddressMap:
    """The DRAM map as QEMU itself lays it out, read from a paused machine."""
    return address_map(topo, paused_layout(topo, tmp_path_factory.mktemp("mtree")))


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # UNIX socket paths are short: keep them out of pytest's deep tmp paths.
    path = Path(tempfile.mkdtemp(prefix="cxlrig-t-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_firmware(lib: Path, topo: Topology, run: RunDir, args: tuple[tuple[str, str], ...],
                 during: Callable[[Machine], None] | None = None) -> PluginResults:
    opts = QemuOptions(accel="tcg", single_thread=True, plugin=Plugin(lib, args))
    with Machine(topo, opts, run) as m:
        if during is None:
            time.sleep(FIRMWARE_S)
        else:
            during(m)
    assert m.exitcode == 0, m.qemu_output()
    return load_results(run.path / "plugin.json")


def test_firmware_accesses_are_counted_and_written_at_quit(
        lib: Path, topo: Topology, dram_map: AddressMap, tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "fw")
    out = run.path / "plugin.json"
    seen: list[PluginResults] = []

    def during(m: Machine) -> None:
        time.sleep(FIRMWARE_S)
        seen.append(load_results(out))  # written when the plugin was loaded

    r = run_firmware(lib, topo, run, plugin_args(dram_map, out=out, interval=1_000_000),
                     during)
    assert seen[0].status == "running"
    assert r.exited and r.bad_index == 0
    n0 = r.totals.nodes[0]
    assert n0.reads > 0 and n0.writes > 0
    assert n0.modelled_ns == (n0.reads + n0.writes) * 90  # default.yaml: 90 ns both ways
    assert r.totals.insns > 1_000_000
    # One phase, never snapshotted: it is the whole run.
    (phase,) = r.phases
    assert phase.name is None and phase.nodes == r.totals.nodes
    assert phase.unmatched == r.totals.unmatched
    assert phase.unmatched.ram.reads > 0  # the BIOS ROM below 4 GiB is in no node
    assert phase.pages_touched == len(phase.pages) > 0
    assert all(0 <= p.pa < GiB and p.node == 0 for p in phase.pages)
    assert sum(p.total for p in phase.pages) == n0.total
    assert r.series and all(a.insns < b.insns for a, b in itertools.pairwise(r.series))


@pytest.mark.parametrize("bad, message", [
    (("bogus=1",), "cxlrig-mem: bogus=1: unknown key 'bogus'"),
    (("node=0:0x0:0x4000000g",), "cxlrig-mem: node=0:0x0:0x4000000g: END '0x4000000g' is "
                                 "not a number"),
    (("node=0:0x0:0x2000", "node=1:0x1000:0x3000"),
     "cxlrig-mem: node=1:0x1000:0x3000: overlaps node=0:0x0:0x2000"),
    (("region=r:0x0:0x2000:2:4096:a+b", "region=s:0x1000:0x1000:1:4096:c"),
     "cxlrig-mem: region=s:0x1000:0x1000:1:4096:c: overlaps region=r:0x0:0x2000:2:4096:a+b"),
    (("sample=0x",), "cxlrig-mem: sample=0x: expected a number from 1 to 1000000000"),
    (("lat=3:90:90",), "cxlrig-mem: lat=3:90:90: node 3 has no node= range"),
    (("out=/nonexistent/plugin.json",), "cxlrig-mem: out=/nonexistent/plugin.json: cannot "
                                        "write /nonexistent/plugin.json.tmp: No such file"),
], ids=["unknown-key", "bad-number", "overlap", "region-overlap", "bad-sample", "lat-node",
        "out-dir"])
def test_bad_arguments_stop_qemu_at_start(lib: Path, topo: Topology, tmp_path: Path,
                                          bad: tuple[str, ...], message: str) -> None:
    pairs = [a.split("=", 1) for a in bad]
    out = () if any(k == "out" for k, _ in pairs) else (("out", str(tmp_path / "p.json")),)
    args = (*out, *((k, v) for k, v in pairs))
    opts = QemuOptions(accel="tcg", single_thread=True, plugin=Plugin(lib, args))
    with pytest.raises(LaunchError) as err:
        Machine(topo, opts, RunDir.create(tmp_path, "bad")).launch()
    assert message in err.value.output
    assert "Could not load plugin" in err.value.output
    assert err.value.exitcode == 1


def test_snapshot_over_the_control_socket_makes_two_phases(
        lib: Path, topo: Topology, dram_map: AddressMap, tmp_path: Path, sockdir: Path) -> None:
    run = RunDir.create(tmp_path, "snap")
    out, ctl = run.path / "plugin.json", sockdir / "c.sock"
    mid: list[PluginResults] = []

    def during(m: Machine) -> None:
        with Control(ctl) as c:
            assert c.ping().startswith("cxlrig-mem ")
            time.sleep(FIRMWARE_S)
            assert c.snapshot("firmware") == 0
            mid.append(load_results(out))  # the reply comes after the file is written
            time.sleep(0.3)

    r = run_firmware(lib, topo, run, plugin_args(dram_map, out=out, control=ctl), during)
    assert [p.name for p in mid[0].phases] == ["firmware", None]
    assert [p.name for p in r.phases] == ["firmware", None]
    fw, rest = r.phases
    assert fw == mid[0].phases[0]  # a closed phase never changes
    assert fw.nodes[0].total > 0 and fw.pages_touched > 0
    assert rest.start_insns == fw.end_insns and rest.end_insns == r.totals.insns
    for n, c in r.totals.nodes.items():
        assert fw.nodes[n].total + rest.nodes[n].total == c.total
    assert fw.accesses + rest.accesses == r.totals.accesses
    assert not ctl.exists()  # removed at exit


def test_reset_discards_and_errors_come_back(
        lib: Path, topo: Topology, dram_map: AddressMap, tmp_path: Path, sockdir: Path) -> None:
    run = RunDir.create(tmp_path, "reset")
    out, ctl = run.path / "plugin.json", sockdir / "c.sock"

    def during(m: Machine) -> None:
        with Control(ctl) as c:
            time.sleep(FIRMWARE_S)
            c.reset()
            c.flush()
            with pytest.raises(ControlError, match="NAME must be"):
                c.snapshot("two words")
            with pytest.raises(ControlError, match="unknown command"):
                c.command("frobnicate")
            assert c.snapshot("idle") == 0

    r = run_firmware(lib, topo, run, plugin_args(dram_map, out=out, control=ctl), during)
    assert [p.name for p in r.phases] == ["idle", None]
    # The firmware's accesses were discarded: only the totals still have them.
    assert sum(p.accesses for p in r.phases) < r.totals.accesses / 10
    assert r.phases[0].start_insns > 1_000_000


def test_region_devices_agree_with_pages(lib: Path, topo: Topology, tmp_path: Path,
                                        sockdir: Path) -> None:
    # Regions laid over DRAM exercise the interleave decode with firmware
    # accesses: at 4 KiB granularity each page belongs to exactly one
    # device, so the device counts must equal the page counts summed. The
    # three-way region is added over the control socket while the machine
    # is paused, as region bases from a guest would be.
    two = RegionDecode("two", 0, 0x20000000, 4096, ("d0", "d1"))
    three = RegionDecode("three", 0x20000000, 4096 * 3 * 43690, 4096, ("e0", "e1", "e2"))
    run = RunDir.create(tmp_path, "regions")
    ctl = sockdir / "c.sock"
    args = plugin_args(AddressMap(nodes=(NodeRange(0, 0, GiB),), regions=(two,)),
                       out=run.path / "plugin.json", control=ctl)
    opts = QemuOptions(accel="tcg", single_thread=True, paused=True, plugin=Plugin(lib, args))
    with Machine(topo, opts, run) as m, Control(ctl) as c:
        with pytest.raises(ControlError, match="region=bad:0x0:0x1000:1:4096:x: overlaps "
                                               "region=two:0x0:0x20000000:2:4096:d0"):
            c.add([("region", "bad:0x0:0x1000:1:4096:x")])
        c.add(map_args(AddressMap(regions=(three,))))
        m.qmp("cont")
        time.sleep(FIRMWARE_S)
    r = load_results(run.path / "plugin.json")
    assert r.added == ("region=three:0x20000000:0x1fffe000:3:4096:e0+e1+e2",)
    (phase,) = r.phases
    for reg in (two, three):
        expect = dict.fromkeys(reg.devices, 0)
        for p in phase.pages:
            if reg.base <= p.pa < reg.end:
                expect[reg.device_of(p.pa)] += p.total
        got = {d: phase.devices[d].total for d in reg.devices}
        assert got == expect
        assert sum(got.values()) == phase.regions[reg.name].total > 0
    assert [g.name for g in r.regions] == ["two", "three"] and r.regions[1].ways == 3


def test_sampled_counts_estimate_the_exact_ones(
        lib: Path, topo: Topology, dram_map: AddressMap, tmp_path: Path) -> None:
    runs = {}
    for sample in (1, 16):
        run = RunDir.create(tmp_path, f"sample{sample}")
        runs[sample] = run_firmware(lib, topo, run, plugin_args(
            dram_map, out=run.path / "plugin.json", sample=sample))
    exact, sampled = runs[1], runs[16]
    assert sampled.sample == 16 and sampled.sampled
    n0 = sampled.totals.nodes[0]
    assert n0.reads % 16 == 0 and n0.writes % 16 == 0
    # The same firmware: accesses per instruction agree within a few percent.
    ratio = (sampled.totals.accesses / sampled.totals.insns) / \
        (exact.totals.accesses / exact.totals.insns)
    assert 0.9 < ratio < 1.1


def test_delay_sleeps_the_modelled_difference(lib: Path, topo: Topology,
                                              tmp_path: Path) -> None:
    # Everything above 1 MiB is "slow": 910 ns more than the fast node per access.
    amap = AddressMap(nodes=(NodeRange(0, 0, 0x100000), NodeRange(1, 0x100000, GiB)),
                      latencies=(Latency(0, 90, 90), Latency(1, 1000, 1000)))
    run = RunDir.create(tmp_path, "delay")
    r = run_firmware(lib, topo, run, plugin_args(amap, out=run.path / "plugin.json",
                                                 delay=True))
    owed = r.totals.nodes[1].total * 910
    assert owed > 50_000_000  # the firmware does touch the slow node
    # Owed is the model's, exactly; slept is owed less what was still owed at
    # exit, exactly; and that is under one 200 us quantum plus the largest
    # oversleep per vCPU, however much the host's sleeps overshot.
    assert r.delay_owed_ns == owed
    assert r.delay_debt_ns is not None and r.slept_ns == owed - r.delay_debt_ns
    assert r.vcpus and r.delay_min_ns and r.delay_max_overshoot_ns is not None
    assert abs(r.delay_debt_ns) <= r.vcpus * (r.delay_min_ns + r.delay_max_overshoot_ns)
    assert r.phases[0].delay_ns == r.slept_ns
