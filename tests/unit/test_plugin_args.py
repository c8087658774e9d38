"""The plugin's Python side before QEMU starts: address maps, arguments, memory trees.

The ``info mtree -f`` texts below are QEMU 10.0.2's own output for paused
machines (``-S``), trimmed to the flat views that matter: the SMM view
(root ``memory``, which must be skipped) and the ``memory`` address space.
"""

from __future__ import annotations

from pathlib import Path, PurePath

import pytest

from cxlrig.plugin.addrmap import (
    AddressMap,
    Latency,
    PluginConfigError,
    RegionDecode,
    address_map,
    dram_map,
    map_args,
    plugin_args,
    region_map,
)
from cxlrig.qemu.args import Plugin, QemuOptions, build_argv
from cxlrig.qemu.mtree import MemoryLayout, MemoryTreeError, NodeRange, parse_mtree
from cxlrig.topology import load

from ..conftest import REPO

# topologies/default.yaml: one 1 GiB node, one CXL window (4 GiB).
MTREE_DEFAULT = """\
FlatView #5
 AS "cpu-smm-0", root: memory
 Root memory region: memory
  0000000000000000-00000000000bffff (prio 0, ram): ram-node0
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000
  0000000000100000-000000003fffffff (prio 0, ram): ram-node0 @0000000000100000
  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic
  00000000fed00000-00000000fed003ff (prio 0, i/o): hpet
  00000000fee00000-00000000feefffff (prio 4096, i/o): apic-msi
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-0000000100000fff (prio 0, i/o): .io
  0000000100001000-0000000100001fff (prio 0, i/o): .cache_mem
  0000000110000000-000000020fffffff (prio 0, i/o): cxl-fixed-memory-region

FlatView #6
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 AS "cpu-memory-1", root: system
 Root memory region: system
  0000000000000000-00000000000bffff (prio 0, ram): ram-node0
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000
  0000000000100000-000000003fffffff (prio 0, ram): ram-node0 @0000000000100000
  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic
  00000000fed00000-00000000fed003ff (prio 0, i/o): hpet
  00000000fee00000-00000000feefffff (prio 4096, i/o): apic-msi
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-0000000100000fff (prio 0, i/o): .io
  0000000100001000-0000000100001fff (prio 0, i/o): .cache_mem
  0000000110000000-000000020fffffff (prio 0, i/o): cxl-fixed-memory-region
"""

# Two nodes of 3 GiB and 1 GiB: node 0 is split around the 32-bit PCI hole.
MTREE_SPLIT = """\
FlatView #1
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 AS "cpu-memory-1", root: system
 Root memory region: system
  0000000000000000-00000000000bffff (prio 0, ram): ram-node0
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000
  0000000000100000-000000007fffffff (prio 0, ram): ram-node0 @0000000000100000
  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic
  00000000fed00000-00000000fed003ff (prio 0, i/o): hpet
  00000000fee00000-00000000feefffff (prio 4096, i/o): apic-msi
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-000000013fffffff (prio 0, ram): ram-node0 @0000000080000000
  0000000140000000-000000017fffffff (prio 0, ram): ram-node1

"""

# topologies/numa-dram2-cxl.yaml: two 512 MiB nodes and one window.
MTREE_NUMA = """\
FlatView #0
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 AS "cpu-memory-1", root: system
 Root memory region: system
  0000000000000000-00000000000bffff (prio 0, ram): ram-node0
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000
  0000000000100000-000000001fffffff (prio 0, ram): ram-node0 @0000000000100000
  0000000020000000-000000003fffffff (prio 0, ram): ram-node1
  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic
  00000000fed00000-00000000fed003ff (prio 0, i/o): hpet
  00000000fee00000-00000000feefffff (prio 4096, i/o): apic-msi
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-0000000100000fff (prio 0, i/o): .io
  0000000100001000-0000000100001fff (prio 0, i/o): .cache_mem
  0000000110000000-000000020fffffff (prio 0, i/o): cxl-fixed-memory-region
"""

GiB = 1 << 30


def test_mtree_default_takes_the_memory_view_and_bridges_the_bios_hole() -> None:
    layout = parse_mtree(MTREE_DEFAULT)
    # [0, 0xc0000) and [0x100000, 1G) are one linear mapping of ram-node0;
    # the ROM between them is that RAM once the firmware switches PAM.
    assert layout.dram == (NodeRange(0, 0, GiB),)
    assert layout.windows == ((0x110000000, 0x210000000),)


def test_mtree_keeps_high_memory_a_separate_range() -> None:
    layout = parse_mtree(MTREE_SPLIT)
    assert layout.dram == (NodeRange(0, 0, 0x80000000),
                           NodeRange(0, 0x100000000, 0x140000000),
                           NodeRange(1, 0x140000000, 0x180000000))
    assert layout.windows == ()


def test_mtree_two_nodes() -> None:
    layout = parse_mtree(MTREE_NUMA)
    assert layout.dram == (NodeRange(0, 0, 0x20000000), NodeRange(1, 0x20000000, 0x40000000))


def test_mtree_backend_names_can_be_given() -> None:
    layout = parse_mtree(MTREE_NUMA, backends={"ram-node1": 7})
    assert layout.dram == (NodeRange(7, 0x20000000, 0x40000000),)


def test_mtree_without_memory_view_is_an_error() -> None:
    with pytest.raises(MemoryTreeError, match="no flat view"):
        parse_mtree("FlatView #0\n AS \"I/O\", root: io\n")


def _default_map() -> AddressMap:
    topo = load(REPO / "topologies" / "default.yaml")
    return address_map(topo, parse_mtree(MTREE_DEFAULT), {"region0": 0x110000000})


def test_address_map_for_the_default_topology() -> None:
    amap = _default_map()
    assert amap.nodes == (NodeRange(0, 0, GiB), NodeRange(1, 0x110000000, 0x130000000))
    assert amap.regions == (RegionDecode("region0", 0x110000000, 512 << 20, 4096,
                                         ("mem0", "mem1")),)
    assert amap.latencies == (Latency(0, 90, 90), Latency(1, 250, 300))
    assert amap.node_ids == (0, 1)
    assert amap.node_of(0x120000000) == 1
    assert amap.node_of(0x100000000) is None


def test_plugin_args_render_the_documented_syntax() -> None:
    args = plugin_args(_default_map(), out=PurePath("/run/p.json"),
                       control=PurePath("/tmp/c.sock"), sample=4, interval=1000,
                       interval_unit="ns", flush=0.5, pages_top=10, delay=True)
    assert args == (
        ("out", "/run/p.json"),
        ("node", "0:0x0:0x40000000"),
        ("node", "1:0x110000000:0x130000000"),
        ("region", "region0:0x110000000:0x20000000:2:4096:mem0+mem1"),
        ("lat", "0:90:90"),
        ("lat", "1:250:300"),
        ("pages_top", "10"),
        ("sample", "4"),
        ("interval", "1000"),
        ("interval_unit", "ns"),
        ("flush", "0.5"),
        ("control", "/tmp/c.sock"),
        ("delay", "on"),
    )


def test_plugin_args_defaults_are_left_out() -> None:
    amap = AddressMap(nodes=(NodeRange(0, 0, GiB),))
    assert plugin_args(amap, out=PurePath("o.json")) == (("out", "o.json"),
                                                         ("node", "0:0x0:0x40000000"))
    assert plugin_args(amap, out=PurePath("o"), pages=False, flush=0)[-2:] == (
        ("pages", "off"), ("flush", "0"))


def test_plugin_token_escapes_commas() -> None:
    topo = load(REPO / "topologies" / "default.yaml")
    args = plugin_args(AddressMap(nodes=(NodeRange(0, 0, GiB),)), out=PurePath("/r/a,b.json"))
    argv = build_argv(topo, QemuOptions(plugin=Plugin(Path("/p/lib.so"), args),
                                        single_thread=True))
    assert argv[argv.index("-plugin") + 1] == "/p/lib.so,out=/r/a,,b.json,node=0:0x0:0x40000000"
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"


def test_plugin_options_are_checked_all_at_once() -> None:
    amap = AddressMap(nodes=(NodeRange(0, 0, GiB),))
    with pytest.raises(PluginConfigError) as err:
        plugin_args(amap, out=PurePath("o"), sample=0, interval=-1, interval_unit="s",
                    flush=0.0001, delay=True, control=PurePath("/" + "x" * 120))
    assert err.value.problems == (
        "sample: 0 is not 1..1000000000",
        "interval: -1 is not positive",
        "interval_unit: 's' is not 'insn' or 'ns'",
        "flush: 0.0001 s is not 0..86400 in whole milliseconds",
        "delay: needs a latency for at least one node",
        f"control: /{'x' * 120} is longer than a UNIX socket path may be",
    )


def test_address_map_problems_are_reported_together() -> None:
    with pytest.raises(PluginConfigError) as err:
        AddressMap(nodes=(NodeRange(0, 0, 0x2000), NodeRange(1, 0x1000, 0x3000),
                          NodeRange(2, 0x10000, 0x10800), NodeRange(9000, 0x20000, 0x30000)),
                   regions=(RegionDecode("r", 0, 0x3000, 4096, ("a", "b")),
                            RegionDecode("r", 0x1000, 0x1000, 100, ("a", "a", "c", "d", "e")),
                            RegionDecode("bad name", 0x100000, 0x1000, 4096, ("x",))),
                   latencies=(Latency(5, 1, 1), Latency(0, 1, 2_000_000), Latency(0, 1, 1)))
    assert err.value.problems == (
        "node 2 [0x10000, 0x10800): not 4 KiB aligned",
        "node 9000 [0x20000, 0x30000): node ID must be 0..4095",
        "node 1 [0x1000, 0x3000) overlaps node 0 [0x0, 0x2000)",
        "region r: size 0x3000 is not a multiple of granularity * ways",
        "region r: 5 devices, ways must be one of (1, 2, 3, 4, 6, 8, 12, 16)",
        "region r: granularity 100 not one of (256, 512, 1024, 2048, 4096, 8192, 16384)",
        "region r: a device appears twice in ['a', 'a', 'c', 'd', 'e']",
        "region bad name: name must be 1-63 letters, digits, '_', '-' or '.'",
        "region r: name used twice",
        "region r overlaps region r",
        "latency for node 5: the node has no range",
        "latency for node 0: must be 0..1000000 ns",
        "latency for node 0: given twice",
    )


def test_overlap_is_found_past_a_contained_range() -> None:
    with pytest.raises(PluginConfigError, match=r"node 2 .* overlaps node 0"):
        AddressMap(nodes=(NodeRange(0, 0, 0x10000), NodeRange(1, 0x1000, 0x2000),
                          NodeRange(2, 0x3000, 0x4000)))


def test_region_positions_follow_the_decoders() -> None:
    two = RegionDecode("r", 0x110000000, 512 << 20, 4096, ("a", "b"))
    assert [two.device_of(two.base + i * 4096) for i in range(4)] == ["a", "b", "a", "b"]
    # Three ways: the modulo is of the absolute address, as QEMU decodes;
    # 0x110000000 / 256 leaves remainder 2 when divided by 3.
    three = RegionDecode("t", 0x110000000, 3 * (256 << 20), 256, ("a", "b", "c"))
    assert three.position(three.base) == 2
    assert [three.device_of(three.base + i * 256) for i in range(3)] == ["c", "a", "b"]


def test_maps_reject_what_the_topology_does_not_have() -> None:
    topo = load(REPO / "topologies" / "default.yaml")
    empty = MemoryLayout(dram=(), windows=())
    with pytest.raises(PluginConfigError) as err:
        dram_map(topo, empty)
    assert err.value.problems == ("DRAM node 0: not in QEMU's memory map",)
    with pytest.raises(PluginConfigError) as err:
        region_map(topo, empty, {"nope": 0})
    assert err.value.problems == ("QEMU shows 0 CXL windows, the topology has 1",
                                  "region nope: not in the topology")
    with pytest.raises(PluginConfigError, match="outside its window cfmw0"):
        region_map(topo, parse_mtree(MTREE_DEFAULT), {"region0": 0x200000000})


def test_regions_added_later_are_the_rest_of_the_map() -> None:
    # The guest reports region bases after boot: the plugin starts with the
    # DRAM map and is sent the region map over the control socket.
    topo = load(REPO / "topologies" / "default.yaml")
    layout = parse_mtree(MTREE_DEFAULT)
    dram = dram_map(topo, layout)
    cxl = region_map(topo, layout, {"region0": 0x110000000})
    assert dram.merged(cxl) == _default_map()
    assert map_args(cxl) == (("node", "1:0x110000000:0x130000000"),
                             ("region", "region0:0x110000000:0x20000000:2:4096:mem0+mem1"),
                             ("lat", "1:250:300"))
    with pytest.raises(PluginConfigError, match="overlaps"):
        dram.merged(dram)


def test_with_region_adds_range_and_latency() -> None:
    base = AddressMap(nodes=(NodeRange(0, 0, GiB),), latencies=(Latency(0, 90, 90),))
    reg = RegionDecode("r", 0x110000000, 256 << 20, 256, ("m",))
    amap = base.with_region(reg, node=1, latency=(250, 300))
    assert amap.nodes[-1] == NodeRange(1, 0x110000000, 0x120000000)
    assert amap.latency(1) == Latency(1, 250, 300)
    assert amap.regions == (reg,)
