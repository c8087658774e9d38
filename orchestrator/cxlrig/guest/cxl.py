"""CXL bring-up in the guest, from the topology, and proof that it worked.

QEMU does not program HDM decoders: for every region of the topology the
guest runs ``cxlrig-region`` (guest/initramfs), which drives the Linux 6.12
sysfs ABI (create region on the root decoder whose start is the window's
base, granularity, ways, endpoint decoder mode and DPA size, region size,
targets in interleave order, commit, bind, online). Then we check against
the topology: ``cxl list`` shows every memdev (by serial) and the regions;
each ram region is a NUMA node of the expected number and size with no CPUs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cxlrig.errors import CheckFailed
from cxlrig.guest.session import GuestSession
from cxlrig.topology import model as m

log = logging.getLogger(__name__)


class BringUpError(CheckFailed):
    """A region could not be created, or the guest does not match the topology."""


@dataclass(frozen=True)
class RegionState:
    """A region as the guest made it."""

    id: str  # the topology's name
    name: str  # the kernel's (region0, ...)
    type: str
    size: int
    ways: int
    granularity: int
    base: int  # host physical address (resource)
    node: int  # -1 for pmem
    dax: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class NodeState:
    node: int
    mem_total: int  # bytes, from /sys/devices/system/node/nodeN/meminfo
    cpus: str
    distances: tuple[int, ...]


def create_regions(session: GuestSession, topo: m.Topology, window_bases: dict[str, int],
                   regions: Sequence[m.Region] | None = None) -> list[RegionState]:
    """Create, commit and online ``regions`` (by default every region of ``topo``
    made at boot), in file order."""
    states = []
    for r in topo.booted_regions if regions is None else regions:
        base = window_bases.get(r.window)
        if base is None:
            raise BringUpError(f"region '{r.id}': window '{r.window}' is not mapped")
        serials = " ".join(hex(topo.device(d).serial) for d in r.devices)
        online = r.online or "none"
        cmd = (f"cxlrig-region {base:#x} {r.type} {r.ways} {r.granularity} {r.size} "
               f"{online} {serials}")
        res = session.run(cmd, timeout=None)
        if not res.ok:
            raise BringUpError(f"region '{r.id}': creating it failed: "
                               f"{(res.stderr or res.stdout).strip()}\n  command: {cmd}")
        try:
            data = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise BringUpError(f"region '{r.id}': unreadable answer {res.stdout!r}") from exc
        states.append(RegionState(
            id=r.id, name=data["region"], type=data["type"], size=int(data["size"]),
            ways=int(data["ways"]), granularity=int(data["granularity"]),
            base=int(str(data["resource"]), 0), node=int(data["node"]), dax=data["dax"],
            targets=tuple(str(data["targets"]).split())))
        log.info("region %s -> %s, node %s", r.id, data["region"], data["node"])
    return states


@dataclass(frozen=True)
class GuestState:
    """What the guest's sysfs says about CXL and NUMA after bring-up."""

    memdev_serials: dict[str, int]  # mem0 -> serial
    regions: dict[str, str]  # region0 -> decode state ("commit", ...)
    nodes: dict[int, NodeState]


#: One round trip for everything verify() needs. Read from sysfs, which is
#: what 'cxl list' reads too; running cxl itself costs over a second under
#: TCG the first time (its libraries are translated), so it is left to tests.
_STATE_SCRIPT = r"""
cd /sys/bus/cxl/devices 2>/dev/null && for m in mem[0-9]*; do
  [ -e "$m/serial" ] && echo "mem $m $(cat $m/serial)"; done
for r in region[0-9]*; do
  [ -e "$r/commit" ] && echo "region $r $(cat $r/commit)"; done
for n in /sys/devices/system/node/node[0-9]*; do
  # cpulist is a binary attribute that the shell's 'read' gets nothing from.
  read -r dist < $n/distance
  echo "node ${n##*node} $(awk '/MemTotal/ {print $4}' $n/meminfo) $dist |$(cat $n/cpulist)|"
done
"""


def read_state(session: GuestSession) -> GuestState:
    res = session.run(_STATE_SCRIPT, timeout=None, check=True)
    serials: dict[str, int] = {}
    regions: dict[str, str] = {}
    nodes: dict[int, NodeState] = {}
    for line in res.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "mem":
            name, serial = rest.split()
            serials[name] = int(serial, 0)
        elif kind == "region":
            name, commit = rest.split()
            regions[name] = "commit" if commit == "1" else "reset"
        elif kind == "node":
            head, _, cpus = rest.partition("|")
            words = head.split()
            n = int(words[0])
            nodes[n] = NodeState(n, int(words[1]) * 1024, cpus.rstrip("|").strip(),
                                 tuple(int(w) for w in words[2:]))
    return GuestState(serials, regions, nodes)


def cxl_list(session: GuestSession) -> list[dict[str, Any]]:
    """``cxl list`` of memdevs, regions and decoders, flattened."""
    res = session.run("cxl list -M -R -D -u", timeout=None, check=True)
    data = json.loads(res.stdout or "[]")
    if isinstance(data, dict):
        data = [data]
    # cxl list groups objects by kind when several kinds are asked for.
    flat: list[dict[str, Any]] = []
    for item in data:
        if isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())),
                                                                    list):
            flat += next(iter(item.values()))
        elif isinstance(item, dict):
            flat.append(item)
    return flat


def verify(topo: m.Topology, regions: list[RegionState], state: GuestState) -> list[str]:
    """Every way the guest differs from the topology, one message each."""
    problems = []
    nodes = state.nodes
    serials = set(state.memdev_serials.values())
    for d in topo.devices:
        if not d.present:
            if d.serial in serials:
                problems.append(f"device '{d.id}' (serial {d.serial:#x}) is there at boot, "
                                "but the topology says it is not present")
        elif d.serial not in serials:
            problems.append(f"device '{d.id}' (serial {d.serial:#x}): no memdev in the guest")
    by_id = {r.id: r for r in regions}
    for r in topo.booted_regions:
        st = by_id.get(r.id)
        if st is None:
            problems.append(f"region '{r.id}': not created")
            continue
        if state.regions.get(st.name) != "commit":
            problems.append(f"region '{r.id}' ({st.name}): not committed in the guest")
        for what, got, want in (("size", st.size, r.size), ("ways", st.ways, r.ways),
                                ("granularity", st.granularity, r.granularity)):
            if got != want:
                problems.append(f"region '{r.id}': {what} is {got}, expected {want}")
        if r.type != "ram" or r.online in ("devdax", "offline"):
            continue  # no NUMA memory: pmem namespaces, device-dax
        if st.node != r.node:
            problems.append(f"region '{r.id}': onlined as node {st.node}, expected {r.node}")
            continue
        node = nodes.get(st.node)
        if node is None:
            problems.append(f"region '{r.id}': NUMA node {st.node} does not exist")
            continue
        if r.online in ("movable", "normal"):
            expected = sum(x.size for x in topo.booted_regions
                           if x.node == r.node and x.type == "ram"
                           and x.online in ("movable", "normal"))
            if node.mem_total != expected:
                problems.append(f"region '{r.id}': node {st.node} has {node.mem_total >> 20} MiB,"
                                f" expected {expected >> 20} MiB")
        if node.cpus:
            problems.append(f"region '{r.id}': node {st.node} has CPUs {node.cpus}, expected none")
    for n in topo.nodes:
        node = nodes.get(n.node)
        if node is None:
            problems.append(f"DRAM node {n.node}: missing in the guest")
        elif n.cpus and node.cpus != _cpulist(n.cpus):
            problems.append(f"DRAM node {n.node}: CPUs {node.cpus}, expected {_cpulist(n.cpus)}")
    return problems


def _cpulist(cpus: tuple[int, ...]) -> str:
    from cxlrig.qemu.args import cpu_ranges

    return ",".join(cpu_ranges(cpus))


def bring_up(session: GuestSession, topo: m.Topology,
             window_bases: dict[str, int]) -> tuple[list[RegionState], GuestState]:
    """Create every region, then verify the guest against the topology."""
    regions = create_regions(session, topo, window_bases)
    state = read_state(session)
    problems = verify(topo, regions, state)
    if problems:
        raise BringUpError("the guest does not match the topology:\n  " + "\n  ".join(problems))
    return regions, state


def memdevs_by_device(topo: m.Topology, state: GuestState) -> dict[str, str]:
    """Topology device id -> the kernel's memdev name (``mem3``), matched by serial.

    The kernel numbers memdevs in probe order, which need not be the
    topology's order: name a device to the guest only through this.
    """
    by_serial = {serial: name for name, serial in state.memdev_serials.items()}
    return {d.id: by_serial[d.serial] for d in topo.devices if d.serial in by_serial}
