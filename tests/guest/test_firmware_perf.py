"""The topology's performance figures as the guest kernel sees them.

The rig gives them as firmware would (SLIT, HMAT, a generic port per host
bridge, each device's CDAT); Linux 6.12 computes the CXL node's access
coordinates itself from the path, places nodes in memory tiers from them and
picks demotion targets. Every figure read back here is the kernel's own.
"""

from __future__ import annotations

import re

import pytest

from cxlrig.guest.boot import Guest
from cxlrig.qemu import firmware as fw
from cxlrig.topology import load
from cxlrig.topology.model import Topology

from ..conftest import REPO
from .conftest import Boot

pytestmark = pytest.mark.guest

READ = r"""
figures() { echo $(cat $1/read_latency $1/write_latency $1/read_bandwidth $1/write_bandwidth); }
for n in /sys/devices/system/node/node[0-9]*; do
  i=${n##*node}
  echo "distance $i $(cat $n/distance)"
  [ -e $n/access0/initiators/read_latency ] && echo "access $i $(figures $n/access0/initiators)"
done
for r in /sys/bus/cxl/devices/region[0-9]*; do echo "region ${r##*/} $(figures $r/access0)"; done
for t in /sys/devices/virtual/memory_tiering/memory_tier*; do
  echo "tier ${t##*memory_tier} $(cat $t/nodelist)"
done
dmesg | grep 'Demotion targets for Node'
"""


def _nodelist(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def read_guest(guest: Guest) -> dict[str, dict[int | str, object]]:
    out = guest.session.run(READ, check=True).stdout
    seen: dict[str, dict[int | str, object]] = {"distance": {}, "access": {}, "region": {},
                                                "tier": {}, "demotion": {}}
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind in ("distance", "access"):
            node, *values = rest.split()
            seen[kind][int(node)] = tuple(int(v) for v in values)
        elif kind == "region":
            name, *values = rest.split()
            seen["region"][name] = fw.Figures(*(int(v) for v in values))
        elif kind == "tier":
            tier, nodes = rest.split()
            for n in _nodelist(nodes):
                seen["tier"][n] = int(tier)
        elif m := re.search(r"Demotion targets for Node (\d+): (.*)", line):
            seen["demotion"][int(m.group(1))] = m.group(2)  # the last line wins
    return seen


def _check_cxl_nodes(topo: Topology, guest: Guest, seen: dict[str, dict[int | str, object]],
                     ) -> None:
    for state in guest.regions:
        region = next(r for r in topo.regions if r.id == state.id)
        want = fw.region_figures(region)
        assert want is not None
        assert seen["region"][state.name] == want, f"{region.id}: the kernel's region figures"
        assert seen["access"][region.node] == (want.read_latency, want.write_latency,
                                               want.read_bandwidth, want.write_bandwidth)
        # Neither SLIT nor HMAT can name a node Linux makes from a CFMWS window:
        # 6.12 keeps its distances at 20.
        row = seen["distance"][region.node]
        assert isinstance(row, tuple)
        assert [d for i, d in enumerate(row) if i != region.node] == [20] * (len(row) - 1)


def test_tiered_machine_figures_tiers_and_demotion(boot: Boot) -> None:
    path = REPO / "topologies" / "tiered-dram3-cxl.yaml"
    topo = load(path)
    with boot(str(path)) as guest:
        seen = read_guest(guest)
    cxl = topo.regions[0].node
    assert cxl == 3
    # DRAM distances: the SLIT as generated, ordered as the latencies.
    want_dist = {(a, b): d for a, b, d in fw.slit(topo)}
    for a in (0, 1, 2):
        row = seen["distance"][a]
        assert isinstance(row, tuple)
        assert row[:3] == tuple(want_dist[(a, b)] for b in (0, 1, 2)), f"node {a}"
    assert seen["distance"][0] == (10, 20, 30, 20)
    # Access coordinates: DRAM nodes from HMAT, the CXL node computed by the kernel.
    for n, f in fw.dram_figures(topo).items():
        assert seen["access"][n] == (f.read_latency, f.write_latency, f.read_bandwidth,
                                     f.write_bandwidth), f"node {n}"
    _check_cxl_nodes(topo, guest, seen)
    # Tiers: the CPU-less slower DRAM node below the DRAM nodes with CPUs, the CXL node lowest.
    tier = seen["tier"]
    assert tier[0] == tier[1] == 4  # MEMTIER_ADISTANCE_DRAM's tier
    assert tier[0] < tier[2] < tier[cxl], tier
    # Demotion follows the tiers: DRAM to the slower DRAM node, that one to CXL.
    assert str(seen["demotion"][0]).startswith("preferred: 2,"), seen["demotion"]
    assert str(seen["demotion"][2]).startswith(f"preferred: {cxl},"), seen["demotion"]
    assert seen["demotion"][cxl] == "null"


@pytest.mark.parametrize("name", ["default", "cross-host-bridge"])
def test_cxl_node_figures_through_a_switch_and_across_host_bridges(boot: Boot, name: str) -> None:
    """default: behind a switch (its SSLBIS counts), 2-way; cross-host-bridge:
    one device under each of two generic ports."""
    topo = load(REPO / "topologies" / f"{name}.yaml")
    with boot(name) as guest:
        seen = read_guest(guest)
    _check_cxl_nodes(topo, guest, seen)
    tier = seen["tier"]
    assert tier[0] < tier[topo.regions[0].node], tier
