"""The resolved topology: every derived value filled in, ready to render.

Produced only by :func:`cxlrig.topology.load`, after validation; the QEMU
argument builder and everything below read these and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

MiB = 1 << 20
GiB = 1 << 30
#: QEMU and the CXL spec count device capacity in 256 MiB units; Linux needs
#: windows and region sizes in the same units.
CXL_CAPACITY_UNIT = 256 * MiB
#: x86_64 memory block (section) size: smaller NUMA nodes are trimmed.
MEMORY_BLOCK = 128 * MiB
LEGAL_WAYS = (1, 2, 3, 4, 6, 8, 12, 16)
#: HDM decoders QEMU 10.0 gives a host bridge, switch or device (seen in the
#: guest's sysfs); a port with one downstream port gets Linux's single
#: pass-through decoder instead.
HDM_DECODERS = 4
LEGAL_GRANULARITY = (256, 512, 1024, 2048, 4096, 8192, 16384)


@dataclass(frozen=True)
class Performance:
    read_latency: int | None = None  # ns
    write_latency: int | None = None  # ns
    read_bandwidth: int | None = None  # MB/s
    write_bandwidth: int | None = None  # MB/s

    @staticmethod
    def _both(read: int | None, write: int | None) -> tuple[int, int] | None:
        # One figure given stands for both directions.
        if read is None and write is None:
            return None
        return (read if read is not None else write or 0,
                write if write is not None else read or 0)

    @property
    def latencies(self) -> tuple[int, int] | None:
        """(read, write) ns, one given standing for both; None if neither is."""
        return self._both(self.read_latency, self.write_latency)

    @property
    def bandwidths(self) -> tuple[int, int] | None:
        """(read, write) MB/s, one given standing for both; None if neither is."""
        return self._both(self.read_bandwidth, self.write_bandwidth)

    @property
    def given(self) -> bool:
        return self.latencies is not None or self.bandwidths is not None


@dataclass(frozen=True)
class DramNode:
    node: int
    memory: int
    cpus: tuple[int, ...]
    performance: Performance


@dataclass(frozen=True)
class HostBridge:
    id: str
    bus_nr: int
    #: Buses this bridge's hierarchy needs (its own, root ports, switches).
    buses: int


@dataclass(frozen=True)
class RootPort:
    id: str
    host_bridge: str
    port: int
    chassis: int
    slot: int


@dataclass(frozen=True)
class DownstreamPort:
    id: str
    switch: str
    port: int
    chassis: int
    slot: int


@dataclass(frozen=True)
class Switch:
    id: str  # the upstream port's QEMU id
    root_port: str
    downstream: tuple[DownstreamPort, ...]


@dataclass(frozen=True)
class Device:
    id: str
    #: QEMU id of the port it plugs into (a root port or a downstream port).
    bus: str
    root_port: str
    switch: str | None
    host_bridge: str
    volatile: int
    persistent: int
    lsa: int
    serial: int
    dc_size: int
    dc_regions: int
    #: False: its port is empty at boot, until a hotplug step adds it.
    present: bool = True

    @property
    def volatile_memdev(self) -> str:
        return f"{self.id}.vmem"

    @property
    def persistent_memdev(self) -> str:
        return f"{self.id}.pmem"

    @property
    def lsa_memdev(self) -> str:
        return f"{self.id}.lsa"

    @property
    def dc_memdev(self) -> str:
        return f"{self.id}.dc"


@dataclass(frozen=True)
class Window:
    index: int
    id: str
    targets: tuple[str, ...]
    size: int
    granularity: int
    #: The NUMA node Linux creates for this window (one per CFMWS that the
    #: SRAT does not describe, numbered after the DRAM nodes).
    node: int

    @property
    def ways(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class Region:
    id: str
    window: str
    type: str  # "ram" | "pmem"
    devices: tuple[str, ...]
    ways: int
    granularity: int
    size: int
    online: str | None  # "movable" | "normal" | "devdax" for ram
    node: int
    performance: Performance
    #: A device of it starts absent: the region is made once they are all added.
    deferred: bool = False


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    source: str
    cpus: int
    accel: str
    maxmem: int | None
    nodes: tuple[DramNode, ...]
    host_bridges: tuple[HostBridge, ...] = ()
    root_ports: tuple[RootPort, ...] = ()
    switches: tuple[Switch, ...] = ()
    devices: tuple[Device, ...] = ()
    windows: tuple[Window, ...] = ()
    regions: tuple[Region, ...] = ()
    _by_id: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for group in (self.host_bridges, self.root_ports, self.switches, self.devices,
                      self.windows, self.regions):
            for item in group:
                self._by_id[item.id] = item
        for sw in self.switches:
            for dsp in sw.downstream:
                self._by_id[dsp.id] = dsp

    def with_cpus(self, cpus: int) -> Topology:
        """This machine with at least ``cpus`` vCPUs, the extra ones on the first node."""
        if cpus <= self.cpus:
            return self
        first = replace(self.nodes[0], cpus=(*self.nodes[0].cpus, *range(self.cpus, cpus)))
        return replace(self, cpus=cpus, nodes=(first, *self.nodes[1:]))

    @property
    def booted_regions(self) -> tuple[Region, ...]:
        """The regions made at boot (all but those waiting for a hot-added device)."""
        return tuple(r for r in self.regions if not r.deferred)

    @property
    def has_cxl(self) -> bool:
        return bool(self.host_bridges)

    @property
    def memory(self) -> int:
        return sum(n.memory for n in self.nodes)

    def device(self, id: str) -> Device:
        item = self._by_id[id]
        assert isinstance(item, Device)
        return item

    def window(self, id: str) -> Window:
        item = self._by_id[id]
        assert isinstance(item, Window)
        return item

    def switch(self, id: str) -> Switch:
        item = self._by_id[id]
        assert isinstance(item, Switch)
        return item
