"""Kernel boots with the plugin: CXL traffic per device, and no MTTCG abort.

The first test is the plugin's whole purpose end to end: a guest creates a
CXL region, the orchestrator tells the running plugin where it is, and a
workload bound to the region's node shows up on that node and, interleaved,
on its two devices.

With multi-threaded TCG and a plugin calling ``qemu_plugin_get_hwaddr``,
QEMU 10.0.2 aborted in ``iotlb_to_section`` (``section_index <
d->map.sections_nb``) while Linux assigned PCI BARs: here 1 boot in 4 of
topologies/large.yaml (16 CXL devices, so many BARs) with two vCPUs.
Single-threaded TCG, which every plugin run uses, never did. These boots
repeat that configuration and fail on any abort.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from cxlrig.guest.boot import GuestImage, booted
from cxlrig.images.initramfs import build_initramfs
from cxlrig.images.kernel import build_kernel
from cxlrig.machine.runner import Machine, RunDir
from cxlrig.plugin import (
    AddressMap,
    Control,
    NodeRange,
    build_plugin,
    dram_map,
    load_results,
    map_args,
    plugin_args,
    region_map,
)
from cxlrig.qemu.args import Plugin, QemuOptions
from cxlrig.qemu.mtree import MemoryLayout
from cxlrig.timeouts import TIMEOUTS
from cxlrig.topology import load

from ..conftest import REPO

pytestmark = pytest.mark.guest

BOOTS = 4
MiB = 1 << 20


def test_cxl_region_traffic_is_counted_per_device(tmp_path: Path) -> None:
    topo = load(REPO / "topologies" / "default.yaml")  # region0: mem0+mem1, 4 KiB
    lib = build_plugin()
    run = RunDir.create(tmp_path, "cxl")
    sockdir = Path(tempfile.mkdtemp(prefix="cxlrig-t-"))
    ctl = sockdir / "c.sock"
    # The plugin starts without a map: the DRAM part goes over the control
    # socket while QEMU is still paused, before any guest access.
    args = plugin_args(AddressMap(), out=run.path / "plugin.json", control=ctl)
    image = GuestImage(build_kernel("v2"), build_initramfs())
    c = Control(ctl)
    seen: list[MemoryLayout] = []

    def before_start(machine: Machine, layout: MemoryLayout) -> None:
        seen.append(layout)
        c.connect()
        c.add(map_args(dram_map(topo, layout)))

    try:
        with booted(topo, image, run, plugin=Plugin(lib, args),
                    before_start=before_start) as guest, c:
            (layout,) = seen
            (region,) = guest.regions
            c.snapshot("boot")
            c.add(map_args(region_map(topo, layout, {region.id: region.base})))
            c.reset()
            res = guest.session.run("numactl --membind=1 dd if=/dev/zero of=/dev/null "
                                    "bs=1M count=4")
            assert res.status == 0, res.stderr
            c.snapshot("dd")
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
    r = load_results(run.path / "plugin.json")
    assert [p.name for p in r.phases] == ["boot", "dd", None]
    boot, dd = r.phases[0], r.phases[1]
    assert boot.nodes[0].total > 0 and boot.nodes[1].total == 0  # node 1 came with "add"
    cxl = dd.nodes[1]
    # dd writes its 4 MiB buffer on node 1, eight bytes a store at most.
    assert cxl.writes >= 4 * MiB // 8
    mem0, mem1 = dd.devices["mem0"], dd.devices["mem1"]
    assert mem0.total + mem1.total == dd.regions["region0"].total == cxl.total
    # 4 KiB interleave over two devices: page-sized buffers split evenly.
    assert 0.45 < mem0.total / cxl.total < 0.55
    assert cxl.modelled_ns == cxl.reads * 250 + cxl.writes * 300
    assert r.bad_index == 0
#: Printed after PCI enumeration and BAR assignment, when init starts.
PAST_PCI = "Run /init"


def test_two_vcpus_single_threaded_boots_do_not_abort(tmp_path: Path) -> None:
    topo = load(REPO / "topologies" / "large.yaml")
    assert topo.cpus >= 2
    kernel, initrd, lib = build_kernel("v2"), build_initramfs(), build_plugin()
    dram = topo.nodes[0].memory
    for i in range(BOOTS):
        run = RunDir.create(tmp_path, f"boot{i}")
        args = plugin_args(AddressMap(nodes=(NodeRange(0, 0, min(dram, 2 << 30)),)),
                           out=run.path / "plugin.json")
        opts = QemuOptions(accel="tcg", single_thread=True, kernel=kernel, initrd=initrd,
                           append="console=ttyS0 panic=-1 nokaslr", plugin=Plugin(lib, args))
        deadline = time.monotonic() + TIMEOUTS.guest_boot
        with Machine(topo, opts, run) as m:
            while m.is_running() and time.monotonic() < deadline:
                if PAST_PCI in run.console_log.read_text(errors="replace"):
                    break
                time.sleep(0.2)
            alive = m.is_running()
        log = m.qemu_output()
        tail = run.console_log.read_text(errors="replace")[-2000:]
        assert "Assertion" not in log and "iotlb_to_section" not in log, f"boot {i}: {log}"
        assert alive, f"boot {i}: QEMU exited ({m.exitcode}):\n{log}\n{tail}"
        assert PAST_PCI in tail or PAST_PCI in run.console_log.read_text(errors="replace"), \
            f"boot {i}: no '{PAST_PCI}' within {TIMEOUTS.guest_boot:.0f} s:\n{tail}"
        assert m.exitcode == 0
        r = load_results(run.path / "plugin.json")
        # Device registers are I/O: the plugin kept them.
        assert r.exited and r.totals.nodes[0].total > 0 and r.totals.unmatched.io.total > 0
        assert r.bad_index == 0
