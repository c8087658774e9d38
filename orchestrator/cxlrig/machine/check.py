"""Prove over QMP that a running machine is exactly what its topology says.

The machine is started paused, before any firmware runs: ``query-pci`` then
only knows buses that already have numbers, but QOM knows the whole device
tree. We read every device under ``/machine/peripheral`` (type, parent bus,
ports, slots, serial, backend sizes), the windows from the machine's
``cxl-fmw`` property and their guest-physical ranges from the flat memory
tree, the DRAM nodes from ``query-memdev`` and ``query-cpus-fast``; then
compare with the topology, both ways (missing and unexpected).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cxlrig.machine.runner import Machine, RunDir
from cxlrig.qemu.args import QemuOptions
from cxlrig.qemu.mtree import MemoryLayout, parse_mtree
from cxlrig.topology import model as m
from cxlrig.topology.schema import format_size

_MEMDEV_PROPS = ("volatile-memdev", "persistent-memdev", "lsa", "volatile-dc-memdev")
_PROPS = ("bus_nr", "port", "chassis", "slot", "sn", "num-dc-regions")


@dataclass(frozen=True)
class FoundDevice:
    id: str
    type: str
    parent: str
    props: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FoundWindow:
    index: int
    targets: tuple[str, ...]
    size: int
    granularity: int
    base: int | None  # guest physical address, from the flat memory tree


@dataclass(frozen=True)
class FoundNode:
    node: int
    memory: int
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class Found:
    devices: tuple[FoundDevice, ...]
    windows: tuple[FoundWindow, ...]
    nodes: tuple[FoundNode, ...]


@dataclass(frozen=True)
class CheckReport:
    found: Found
    mismatches: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def read_windows(machine: Machine, layout: MemoryLayout | None = None) -> tuple[FoundWindow, ...]:
    """The CXL fixed memory windows and where the machine mapped them
    (from ``layout`` when the caller already read the memory tree)."""
    fmws = machine.qmp("qom-get", {"path": "/machine", "property": "cxl-fmw"}) \
        if machine.topo.has_cxl else []
    if layout is None:
        layout = parse_mtree(machine.hmp("info mtree -f"))
    bases = sorted(start for start, _ in layout.windows)
    return tuple(
        FoundWindow(i, tuple(w["targets"]), int(w["size"]),
                    int(w.get("interleave-granularity", 256)),
                    bases[i] if i < len(bases) else None)
        for i, w in enumerate(fmws))


def inspect(machine: Machine) -> Found:
    """Read the device tree, windows and nodes of a running machine."""
    devices = []
    for child in machine.qmp("qom-list", {"path": "/machine/peripheral"}):
        if not str(child["type"]).startswith("child<"):
            continue
        path = f"/machine/peripheral/{child['name']}"
        names = {p["name"] for p in machine.qmp("qom-list", {"path": path})}

        def get(prop: str, path: str = path) -> Any:
            return machine.qmp("qom-get", {"path": path, "property": prop})

        parent_bus = str(get("parent_bus"))
        props: dict[str, int] = {}
        for prop in _PROPS:
            if prop in names:
                props[prop] = int(get(prop))
        for prop in _MEMDEV_PROPS:
            if prop in names:
                link = get(prop)
                if link:
                    props[prop] = int(machine.qmp("qom-get", {"path": link, "property": "size"}))
        devices.append(FoundDevice(child["name"], str(get("type")),
                                   parent_bus.rsplit("/", 1)[-1], props))

    windows = read_windows(machine)

    sizes = {d["id"]: int(d["size"]) for d in machine.qmp("query-memdev")}
    cpus_of: dict[int, list[int]] = {}
    for cpu in machine.qmp("query-cpus-fast"):
        cpus_of.setdefault(int(cpu["props"].get("node-id", 0)), []).append(int(cpu["cpu-index"]))
    nodes = []
    for memdev, size in sorted(sizes.items()):
        if memdev.startswith("ram-node"):
            n = int(memdev.removeprefix("ram-node"))
            nodes.append(FoundNode(n, size, tuple(sorted(cpus_of.get(n, [])))))
    return Found(tuple(devices), windows, tuple(sorted(nodes, key=lambda x: x.node)))


def expected_devices(topo: m.Topology) -> list[FoundDevice]:
    """What :func:`inspect` must find for ``topo``."""
    out = [FoundDevice(hb.id, "pxb-cxl", "pcie.0", {"bus_nr": hb.bus_nr})
           for hb in topo.host_bridges]
    out += [FoundDevice(rp.id, "cxl-rp", rp.host_bridge,
                        {"port": rp.port, "chassis": rp.chassis, "slot": rp.slot})
            for rp in topo.root_ports]
    for sw in topo.switches:
        out.append(FoundDevice(sw.id, "cxl-upstream", sw.root_port))
        out += [FoundDevice(d.id, "cxl-downstream", sw.id,
                            {"port": d.port, "chassis": d.chassis, "slot": d.slot})
                for d in sw.downstream]
    for d in topo.devices:
        if not d.present:
            continue  # its port is empty until a hotplug step adds it
        props = {"sn": d.serial}
        for size, key in ((d.volatile, "volatile-memdev"), (d.persistent, "persistent-memdev"),
                          (d.lsa, "lsa"), (d.dc_size, "volatile-dc-memdev")):
            if size:
                props[key] = size
        props["num-dc-regions"] = d.dc_regions
        out.append(FoundDevice(d.id, "cxl-type3", d.bus, props))
    return out


def compare(topo: m.Topology, found: Found) -> list[str]:
    """Every way ``found`` differs from ``topo``, one message each."""
    problems: list[str] = []
    want = {d.id: d for d in expected_devices(topo)}
    have = {d.id: d for d in found.devices}
    for id, exp in want.items():
        got = have.get(id)
        if got is None:
            problems.append(f"{exp.type} '{id}': missing (expected under '{exp.parent}')")
            continue
        if got.type != exp.type:
            problems.append(f"'{id}': is a {got.type}, expected {exp.type}")
        if got.parent != exp.parent:
            problems.append(f"{exp.type} '{id}': parent is '{got.parent}', "
                            f"expected '{exp.parent}'")
        for key, value in exp.props.items():
            seen = got.props.get(key, 0)
            if seen != value:
                show = format_size if key.endswith("memdev") or key == "lsa" else str
                problems.append(f"{exp.type} '{id}': {key} is {show(seen)}, "
                                f"expected {show(value)}")
        for key in _MEMDEV_PROPS:
            if key in got.props and key not in exp.props:
                problems.append(f"{exp.type} '{id}': has an unexpected {key} "
                                f"of {format_size(got.props[key])}")
    for id, got in have.items():
        if id not in want:
            problems.append(f"{got.type} '{id}': present in the machine, not in the topology")

    if len(found.windows) != len(topo.windows):
        problems.append(f"{len(found.windows)} CXL windows in the machine, "
                        f"{len(topo.windows)} in the topology")
    for w, fw in zip(topo.windows, found.windows, strict=False):
        if fw.targets != w.targets:
            problems.append(f"window '{w.id}': targets {list(fw.targets)}, "
                            f"expected {list(w.targets)}")
        if fw.size != w.size:
            problems.append(f"window '{w.id}': size {format_size(fw.size)}, "
                            f"expected {format_size(w.size)}")
        if fw.granularity != w.granularity:
            problems.append(f"window '{w.id}': granularity {fw.granularity}, "
                            f"expected {w.granularity}")
        if fw.base is None:
            problems.append(f"window '{w.id}': not mapped in the guest physical address space")

    have_nodes = {n.node: n for n in found.nodes}
    for n in topo.nodes:
        fn = have_nodes.get(n.node)
        if fn is None:
            problems.append(f"NUMA node {n.node}: missing")
            continue
        if fn.memory != n.memory:
            problems.append(f"NUMA node {n.node}: {format_size(fn.memory)} of memory, "
                            f"expected {format_size(n.memory)}")
        if n.cpus and fn.cpus != n.cpus:
            problems.append(f"NUMA node {n.node}: CPUs {list(fn.cpus)}, expected {list(n.cpus)}")
    return problems


def check_topology(topo: m.Topology, run_dir: RunDir, *,
                   argv_hook: Callable[[list[str]], list[str]] | None = None,
                   binary: str = "qemu-system-x86_64") -> CheckReport:
    """Start ``topo`` paused with no kernel, inspect it, compare, stop it."""
    opts = QemuOptions(binary=binary, accel="tcg", paused=True)
    with Machine(topo, opts, run_dir, argv_hook=argv_hook) as machine:
        found = inspect(machine)
    return CheckReport(found, tuple(compare(topo, found)))


def tree_lines(topo: m.Topology, found: Found) -> list[tuple[int, str]]:
    """The device tree as found: (depth, text) rows, children after parents."""
    kids: dict[str, list[FoundDevice]] = {}
    for d in found.devices:
        kids.setdefault(d.parent, []).append(d)
    rows: list[tuple[int, str]] = []

    def describe(d: FoundDevice) -> str:
        bits = []
        for key, value in d.props.items():
            if key.endswith("memdev") or key == "lsa":
                bits.append(f"{key.removesuffix('-memdev')}={format_size(value)}")
            elif key == "sn":
                if value != (1 << 64) - 1:  # QEMU's "no serial number"
                    bits.append(f"sn={value:#x}")
            elif key != "num-dc-regions" or value:
                bits.append(f"{key}={value}")
        return f"{d.id} ({d.type}) " + " ".join(bits)

    def walk(parent: str, depth: int) -> None:
        for d in sorted(kids.get(parent, []), key=lambda x: x.id):
            rows.append((depth, describe(d)))
            walk(d.id, depth + 1)

    for n in found.nodes:
        cpus = ",".join(map(str, n.cpus)) or "none"
        rows.append((0, f"NUMA node {n.node}: {format_size(n.memory)} DRAM, CPUs {cpus}"))
    rows.append((0, "pcie.0"))
    walk("pcie.0", 1)
    for w, fw in zip(topo.windows, found.windows, strict=False):
        base = f"{fw.base:#x}-{fw.base + fw.size - 1:#x}" if fw.base is not None else "unmapped"
        rows.append((0, f"window {w.id}: {base} ({format_size(fw.size)}) targets "
                        f"{','.join(fw.targets)} granularity {fw.granularity}"))
    return rows
