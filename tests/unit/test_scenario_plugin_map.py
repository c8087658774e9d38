"""The plugin's address map is checked against the guest's /proc/iomem."""

from __future__ import annotations

from cxlrig.guest.cxl import NodeState
from cxlrig.plugin import AddressMap, NodeRange
from cxlrig.scenario.plugin import check_iomem

AMAP = AddressMap(nodes=(NodeRange(0, 0, 0xa0000), NodeRange(0, 0x100000, 0x40000000),
                         NodeRange(1, 0x110000000, 0x130000000)))
NODES = {0: NodeState(0, 1 << 30, "0-1", (10, 20)), 1: NodeState(1, 512 << 20, "", (20, 10))}


def test_guest_ram_inside_the_map_is_fine() -> None:
    iomem = ("00001000-0009fbff : System RAM\n"
             "00100000-3ffdffff : System RAM\n"
             "    110000000-12fffffff : System RAM (kmem)\n")
    assert check_iomem(AMAP, iomem, NODES) == []


def test_unmapped_or_split_ram_and_unmapped_nodes_are_reported() -> None:
    iomem = ("00001000-0009fbff : System RAM\n"
             "3ff00000-40ffffff : System RAM\n"
             "200000000-20fffffff : System RAM (kmem)\n")
    nodes = {**NODES, 2: NodeState(2, 256 << 20, "", (20, 20, 10))}
    assert check_iomem(AMAP, iomem, nodes) == [
        "guest System RAM 0x3ff00000-0x40ffffff is not in the plugin's map",
        "guest System RAM 0x200000000-0x20fffffff is not in the plugin's map",
        "guest node 2 has memory the plugin does not map",
    ]


def test_one_ram_range_over_two_dram_nodes_is_fine() -> None:
    # Linux lists adjacent DRAM nodes' memory as one resource (numa-dram2-cxl).
    amap = AddressMap(nodes=(NodeRange(0, 0, 0x20000000), NodeRange(1, 0x20000000, 0x40000000),
                             NodeRange(2, 0x110000000, 0x120000000)))
    nodes = {0: NodeState(0, 512 << 20, "0", (10, 20)), 1: NodeState(1, 512 << 20, "1", (20, 10))}
    assert check_iomem(amap, "00100000-3ffdffff : System RAM\n", nodes) == []
    # A hole between the nodes' ranges is still a problem.
    holed = AddressMap(nodes=(NodeRange(0, 0, 0x1ff00000), NodeRange(1, 0x20000000, 0x40000000)))
    assert check_iomem(holed, "00100000-3ffdffff : System RAM\n", nodes) == [
        "guest System RAM 0x100000-0x3ffdffff is not in the plugin's map"]
