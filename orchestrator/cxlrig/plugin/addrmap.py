"""The guest-physical address map the plugin counts by, and its arguments.

An :class:`AddressMap` says which guest-physical ranges belong to which NUMA
node, how each CXL region interleaves over its devices, and what latency
each node is modelled with. :func:`plugin_args` renders it (with the run's
options) as the plugin's ``key=value`` arguments; ``qemu-plugin/README.md``
is the one description of that syntax.

DRAM ranges come from QEMU itself (:func:`cxlrig.qemu.mtree.parse_mtree`
over ``info mtree -f``); CXL region bases only exist once the guest has created the regions,
so :func:`region_map` takes them as an argument, and its result is added
to a running plugin over the control socket (``Control.add``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePath

from cxlrig.errors import ProblemsError
from cxlrig.qemu.mtree import MemoryLayout, NodeRange, overlaps
from cxlrig.topology.model import LEGAL_GRANULARITY, LEGAL_WAYS, Topology

PAGE = 4096
#: Limits the plugin enforces; checked here too so mistakes surface before QEMU starts.
#: The plugin's control command ``limits`` reports its own values, and
#: tests/machine/test_plugin_limits.py holds these to them.
MAX_NODE_ID = 4095
MAX_LATENCY_NS = 1_000_000
MAX_SAMPLE = 1_000_000_000
#: Region, device and phase names: 1 to MAX_NAME letters, digits, ``_``, ``-``, ``.``.
MAX_NAME = 63
#: ``flush=`` in seconds; ``control=`` in bytes (a UNIX socket path).
MAX_FLUSH_S = 86400
MAX_CONTROL_PATH = 107
#: The longest control command in bytes, without its newline.
MAX_CONTROL_LINE = 4095
#: delay=on sleeps once a vCPU owes this much (the bound on owed minus paid).
DELAY_MIN_NS = 20_000
_NAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_NAME}}}")


class PluginConfigError(ProblemsError, ValueError):
    """An address map or plugin option the plugin would refuse; lists every problem."""


@dataclass(frozen=True)
class RegionDecode:
    """A CXL region's host-physical range and interleave, devices in position order."""

    name: str
    base: int
    size: int
    granularity: int
    devices: tuple[str, ...]

    @property
    def ways(self) -> int:
        return len(self.devices)

    @property
    def end(self) -> int:
        return self.base + self.size

    def position(self, pa: int) -> int:
        """The interleave position of ``pa``, as the plugin (and QEMU's decoders) compute it."""
        return (pa // self.granularity) % self.ways

    def device_of(self, pa: int) -> str:
        return self.devices[self.position(pa)]

    @property
    def stripe_aligned(self) -> bool:
        """Whether the region starts on a whole stripe (granularity x ways), where
        :meth:`position` (counted from address 0, as QEMU's window decode and the
        plugin count) and the stripes counted from the base agree. Always so for
        1, 2, 4, 8 and 16 ways on 256 MiB-aligned bases; not for 3, 6 and 12."""
        return self.base % (self.granularity * self.ways) == 0

    def device_offset(self, pa: int) -> int:
        """How far into its device's share of the region ``pa`` lies: whole stripes
        before it give one granule each, plus the offset within its granule.
        Exact where :attr:`stripe_aligned`."""
        stripe, within = divmod(pa - self.base, self.granularity * self.ways)
        return stripe * self.granularity + within % self.granularity

    def hpa_of(self, position: int, offset: int) -> int:
        """The host physical address of byte ``offset`` of the device at ``position``'s
        share: the inverse of :meth:`position` and :meth:`device_offset`."""
        if not 0 <= position < self.ways or not 0 <= offset < self.size // self.ways:
            raise ValueError(f"region {self.name}: no byte {offset:#x} at position {position}")
        granule, within = divmod(offset, self.granularity)
        return self.base + (granule * self.ways + position) * self.granularity + within


@dataclass(frozen=True)
class Latency:
    node: int
    read_ns: int
    write_ns: int


@dataclass(frozen=True)
class AddressMap:
    """Validated on construction: an invalid map raises :class:`PluginConfigError`."""

    nodes: tuple[NodeRange, ...] = ()
    regions: tuple[RegionDecode, ...] = ()
    latencies: tuple[Latency, ...] = ()

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise PluginConfigError(problems)

    def problems(self) -> list[str]:
        out: list[str] = []
        for r in self.nodes:
            if not 0 <= r.node <= MAX_NODE_ID:
                out.append(f"{r}: node ID must be 0..{MAX_NODE_ID}")
            if r.end <= r.start or r.start < 0:
                out.append(f"{r}: empty or negative range")
            if r.start % PAGE or r.end % PAGE:
                out.append(f"{r}: not 4 KiB aligned")
        out += overlaps([(r.start, r.end, str(r)) for r in self.nodes])
        for g in self.regions:
            where = f"region {g.name}"
            if not _NAME.fullmatch(g.name):
                out.append(f"{where}: name must be 1-63 letters, digits, '_', '-' or '.'")
            if g.ways not in LEGAL_WAYS:
                out.append(f"{where}: {g.ways} devices, ways must be one of {LEGAL_WAYS}")
            if g.granularity not in LEGAL_GRANULARITY:
                out.append(f"{where}: granularity {g.granularity} not one of "
                           f"{LEGAL_GRANULARITY}")
            elif g.ways and g.size % (g.granularity * g.ways):
                out.append(f"{where}: size {g.size:#x} is not a multiple of granularity * ways")
            if g.size <= 0 or g.base < 0 or g.base % PAGE or g.size % PAGE:
                out.append(f"{where}: base and size must be 4 KiB aligned, size positive")
            bad = [d for d in g.devices if not _NAME.fullmatch(d)]
            if bad:
                out.append(f"{where}: bad device names {bad}")
            if len(set(g.devices)) != len(g.devices):
                out.append(f"{where}: a device appears twice in {list(g.devices)}")
        names = [g.name for g in self.regions]
        out += [f"region {n}: name used twice" for n in sorted({n for n in names
                                                                 if names.count(n) > 1})]
        out += overlaps([(g.base, g.end, f"region {g.name}") for g in self.regions])
        known = {r.node for r in self.nodes}
        seen: set[int] = set()
        for lat in self.latencies:
            if lat.node not in known:
                out.append(f"latency for node {lat.node}: the node has no range")
            if lat.node in seen:
                out.append(f"latency for node {lat.node}: given twice")
            seen.add(lat.node)
            if not (0 <= lat.read_ns <= MAX_LATENCY_NS and 0 <= lat.write_ns <= MAX_LATENCY_NS):
                out.append(f"latency for node {lat.node}: must be 0..{MAX_LATENCY_NS} ns")
        return out

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(sorted({r.node for r in self.nodes}))

    def node_of(self, pa: int) -> int | None:
        for r in self.nodes:
            if pa in r:
                return r.node
        return None

    def latency(self, node: int) -> Latency | None:
        return next((lat for lat in self.latencies if lat.node == node), None)

    def merged(self, other: AddressMap) -> AddressMap:
        """Both maps in one; overlaps and a node's second latency are errors."""
        return AddressMap(nodes=self.nodes + other.nodes, regions=self.regions + other.regions,
                          latencies=self.latencies + other.latencies)

    def with_region(self, region: RegionDecode, node: int | None = None,
                    latency: tuple[int, int] | None = None) -> AddressMap:
        """This map plus ``region``; with ``node``, its range also becomes that node's."""
        nodes = self.nodes
        lats = self.latencies
        if node is not None:
            nodes = (*nodes, NodeRange(node, region.base, region.end))
            if latency is not None and self.latency(node) is None:
                lats = (*lats, Latency(node, *latency))
        return replace(self, nodes=nodes, regions=(*self.regions, region), latencies=lats)


def _seconds(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def map_args(amap: AddressMap) -> tuple[tuple[str, str], ...]:
    """The map's ``node=``, ``region=`` and ``lat=`` arguments (also what ``add`` takes)."""
    args: list[tuple[str, str]] = []
    for r in sorted(amap.nodes, key=lambda r: (r.start, r.node)):
        args.append(("node", f"{r.node}:{r.start:#x}:{r.end:#x}"))
    for g in sorted(amap.regions, key=lambda g: g.base):
        args.append(("region", f"{g.name}:{g.base:#x}:{g.size:#x}:{g.ways}:{g.granularity}:"
                               + "+".join(g.devices)))
    for lat in sorted(amap.latencies, key=lambda lat: lat.node):
        args.append(("lat", f"{lat.node}:{lat.read_ns}:{lat.write_ns}"))
    return tuple(args)


def plugin_args(amap: AddressMap, *, out: PurePath, control: PurePath | None = None,
                pages: bool = True, pages_top: int = 0, sample: int = 1,
                interval: int | None = None, interval_unit: str = "insn",
                flush: float = 5.0, delay: bool = False) -> tuple[tuple[str, str], ...]:
    """The plugin's arguments, in a stable order, for :class:`cxlrig.qemu.args.Plugin`.

    Options are checked here, before QEMU starts, with the plugin's own limits.
    ``delay`` needs a latency in ``amap`` (the plugin refuses ``delay=on``
    without one), unless ``amap`` is empty: then the whole map, latencies
    included, is added over the control socket before the vCPUs run.
    """
    problems = []
    if not 1 <= sample <= MAX_SAMPLE:
        problems.append(f"sample: {sample} is not 1..{MAX_SAMPLE}")
    if pages_top < 0:
        problems.append(f"pages_top: {pages_top} is negative")
    if interval is not None and interval <= 0:
        problems.append(f"interval: {interval} is not positive")
    if interval_unit not in ("insn", "ns"):
        problems.append(f"interval_unit: {interval_unit!r} is not 'insn' or 'ns'")
    if not 0 <= flush <= MAX_FLUSH_S or round(flush * 1000) != flush * 1000:
        problems.append(f"flush: {flush} s is not 0..{MAX_FLUSH_S} in whole milliseconds")
    if delay and amap.nodes and not amap.latencies:
        # An empty map is one that comes over the control socket, latencies with it.
        problems.append("delay: needs a latency for at least one node")
    if control is not None and len(str(control).encode()) > MAX_CONTROL_PATH:
        problems.append(f"control: {control} is longer than a UNIX socket path may be")
    if problems:
        raise PluginConfigError(problems)

    args: list[tuple[str, str]] = [("out", str(out)), *map_args(amap)]
    if not pages:
        args.append(("pages", "off"))
    if pages_top:
        args.append(("pages_top", str(pages_top)))
    if sample != 1:
        args.append(("sample", str(sample)))
    if interval is not None:
        args += [("interval", str(interval)), ("interval_unit", interval_unit)]
    if flush != 5.0:
        args.append(("flush", _seconds(flush)))
    if control is not None:
        args.append(("control", str(control)))
    if delay:
        args.append(("delay", "on"))
    return tuple(args)


def dram_map(topo: Topology, layout: MemoryLayout) -> AddressMap:
    """The DRAM part of ``topo``'s map, known before the guest boots."""
    found = {r.node for r in layout.dram}
    missing = [f"DRAM node {n.node}: not in QEMU's memory map" for n in topo.nodes
               if n.node not in found]
    if missing:
        raise PluginConfigError(missing)
    lats = []
    for n in topo.nodes:
        lat = n.performance.latencies
        if lat is not None:
            lats.append(Latency(n.node, *lat))
    return AddressMap(nodes=layout.dram, latencies=tuple(lats))


def region_map(topo: Topology, layout: MemoryLayout,
               region_bases: Mapping[str, int]) -> AddressMap:
    """The CXL regions of ``topo`` at the bases the guest gave them.

    ``region_bases`` maps region ids to their host-physical base (the
    guest's sysfs ``regionN/resource``). Each region's range becomes its
    node's (the window's NUMA node), its performance figures that node's
    latency. Send it to a running plugin with ``Control.add(map_args(...))``.
    """
    problems = []
    if len(layout.windows) != len(topo.windows):
        problems.append(f"QEMU shows {len(layout.windows)} CXL windows, the topology has "
                        f"{len(topo.windows)}")
    regions = {r.id: r for r in topo.regions}
    problems += [f"region {rid}: not in the topology"
                 for rid in sorted(set(region_bases) - set(regions))]
    if problems:
        raise PluginConfigError(problems)
    nodes, decodes = [], []
    lats: dict[int, tuple[tuple[int, int], str]] = {}
    for rid, base in sorted(region_bases.items(), key=lambda kv: kv[1]):
        reg = regions[rid]
        win_start, win_end = layout.windows[topo.window(reg.window).index]
        if not (win_start <= base and base + reg.size <= win_end):
            problems.append(f"region {rid}: [{base:#x}, {base + reg.size:#x}) is outside its "
                            f"window {reg.window} [{win_start:#x}, {win_end:#x})")
        decodes.append(RegionDecode(rid, base, reg.size, reg.granularity, reg.devices))
        nodes.append(NodeRange(reg.node, base, base + reg.size))
        lat = reg.performance.latencies
        if lat is None:
            continue
        if reg.node in lats and lats[reg.node][0] != lat:
            other = lats[reg.node][1]
            problems.append(f"region {rid}: latency {lat} differs from {lats[reg.node][0]} of "
                            f"region {other} on the same node {reg.node}")
        lats.setdefault(reg.node, (lat, rid))
    if problems:
        raise PluginConfigError(problems)
    return AddressMap(nodes=tuple(nodes), regions=tuple(decodes),
                      latencies=tuple(Latency(n, *lat) for n, (lat, _) in sorted(lats.items())))


def address_map(topo: Topology, layout: MemoryLayout,
                region_bases: Mapping[str, int] | None = None) -> AddressMap:
    """DRAM and, for the regions in ``region_bases``, CXL: the whole map at once."""
    return dram_map(topo, layout).merged(region_map(topo, layout, region_bases or {}))
