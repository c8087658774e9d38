"""Performance the guest can see, as firmware gives it: SLIT, HMAT, generic ports, CDAT.

Pure: the tables and the QEMU options that carry them, from the topology's
``performance:`` figures. Without any figure in the topology nothing is added
and the guest sees QEMU's flat machine (every distance 20, no HMAT).

What Linux 6.12 does with them (drivers/acpi/numa/hmat.c, drivers/cxl/core/cdat.c):

- DRAM nodes: SLIT distances and HMAT latencies/bandwidths from every node
  with CPUs (the initiators) are read as they are; one figure per node, the
  same from every initiator, as the plugin's latency model has it.
- A CXL node is not in the SRAT (Linux makes it from the CFMWS window), so
  neither SLIT nor HMAT can name it: its distances stay 20. Linux computes its
  access coordinates itself: the host bridge's generic port (an SRAT entry
  with HMAT figures) + each link on the path (a 68-byte flit's time on it) +
  each switch's SSLBIS + the device's own DSLBIS from its CDAT; a region takes
  the worst latency and the sum of the bandwidths of its devices. So each
  device's CDAT says the region's figure less the rest of its path, and the
  CXL node's ``access0`` reads what the topology says.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from cxlrig.topology import model as m


@dataclass(frozen=True)
class Figures:
    """All four figures, none missing: ns and MB/s."""

    read_latency: int
    write_latency: int
    read_bandwidth: int
    write_bandwidth: int


#: Figures for a DRAM node the topology gives none for (a DDR4-3200 channel).
DRAM_DEFAULT = Figures(read_latency=100, write_latency=100,
                       read_bandwidth=25600, write_bandwidth=25600)
#: QEMU 10's own CDAT for a type-3 device (hw/mem/cxl_type3.c): what a device
#: of a region without figures keeps, and its bandwidth when only latency is given.
QEMU_DEVICE = Figures(read_latency=150, write_latency=250,
                      read_bandwidth=16000, write_bandwidth=16000)
#: The generic port's own latency (CPU to host bridge); the device's CDAT carries the rest.
GENPORT_LATENCY = 1
#: One PCIe link at QEMU's default 32 GT/s x16 (type-3 devices; ports train to
#: the device's width and speed): 68 bytes / 64000 MB/s = 1062 ps, which
#: Linux rounds up to 2 ns per link.
LINK_LATENCY = 2
#: QEMU's cxl-upstream switch CDAT: 150 ns and 16 GB/s between its ports.
SWITCH = Figures(read_latency=150, write_latency=150,
                 read_bandwidth=16000, write_bandwidth=16000)

#: SLIT: the local distance, and the distance of a remote node as fast as the fastest DRAM.
LOCAL_DISTANCE = 10
REMOTE_DISTANCE = 20

# HMAT/CDAT data types (ACPI 6.5 table 5.152).
_READ_LATENCY, _WRITE_LATENCY, _READ_BANDWIDTH, _WRITE_BANDWIDTH = 1, 2, 4, 5
_CDAT_REVISION = 1
_DSMAS, _DSLBIS, _DSEMTS = 0, 1, 4
_DSMAS_NONVOLATILE = 1 << 2


def complete(perf: m.Performance, default: Figures) -> Figures:
    """``perf`` with its gaps filled: one latency (or bandwidth) given stands
    for both directions, as in the plugin's model; none given takes ``default``'s."""
    rl, wl = perf.latencies or (default.read_latency, default.write_latency)
    rb, wb = perf.bandwidths or (default.read_bandwidth, default.write_bandwidth)
    return Figures(rl, wl, rb, wb)


def describes_performance(topo: m.Topology) -> bool:
    """Whether the topology gives any figure (else the machine stays flat)."""
    return any(n.performance.given for n in topo.nodes) or \
        any(r.performance.given for r in topo.regions)


def window_nodes(topo: m.Topology) -> list[int]:
    """QEMU nodes that only hold the proximity domains Linux gives the windows.

    Linux numbers a CFMWS window's domain after the last one the SRAT maps to
    a node (a generic port's does not count): a generic port on that number
    would be taken for the window's node (seen: the CXL node's coordinates
    became the port's 1 ns and it landed in the top memory tier). Memoryless
    and CPU-less, these nodes are not in the SRAT."""
    return list(range(len(topo.nodes), len(topo.nodes) + len(topo.windows)))


def genport_nodes(topo: m.Topology) -> dict[str, int]:
    """Host bridge -> the (memoryless, CPU-less) QEMU node of its generic port.

    Linux maps no node to a generic port's proximity domain, so the CXL nodes
    keep the numbers the topology gives them (after the DRAM nodes)."""
    base = len(topo.nodes) + len(topo.windows)
    return {hb.id: base + i for i, hb in enumerate(topo.host_bridges)}


def dram_figures(topo: m.Topology) -> dict[int, Figures]:
    return {n.node: complete(n.performance, DRAM_DEFAULT) for n in topo.nodes}


def region_figures(region: m.Region) -> Figures | None:
    """A region's figures; bandwidth not given is what QEMU's devices give together."""
    if not region.performance.given:
        return None
    return complete(region.performance,
                    replace(QEMU_DEVICE, read_bandwidth=QEMU_DEVICE.read_bandwidth * region.ways,
                            write_bandwidth=QEMU_DEVICE.write_bandwidth * region.ways))


def path_latency(device: m.Device) -> int:
    """What Linux adds between the generic port and the device's own CDAT figure."""
    if device.switch is None:
        return LINK_LATENCY
    return 2 * LINK_LATENCY + SWITCH.read_latency


def _initiators(topo: m.Topology) -> list[int]:
    return [n.node for n in topo.nodes if n.cpus]


def _genport_figures(topo: m.Topology) -> Figures:
    """As fast as the fastest figure anywhere and as wide as the widest: the
    path behind it sets what the guest sees."""
    drams = list(dram_figures(topo).values())
    regions = [f for r in topo.regions if (f := region_figures(r)) is not None]
    widest = max(max(f.read_bandwidth, f.write_bandwidth) for f in drams + regions)
    return Figures(GENPORT_LATENCY, GENPORT_LATENCY, widest, widest)


def slit(topo: m.Topology) -> list[tuple[int, int, int]]:
    """(from, to, distance) for every ordered pair of QEMU nodes, the local ones at 10.

    A remote distance is 20 scaled by the target's read latency over the
    fastest DRAM node's, so distances order as the latencies do. A generic
    port's node takes the slowest region's figure behind it (Linux ignores it:
    a generic port is not a NUMA node)."""
    drams = dram_figures(topo)
    fastest = min(f.read_latency for f in drams.values())
    latency = {n: f.read_latency for n, f in drams.items()}
    for hb, node in genport_nodes(topo).items():
        behind = [f.read_latency for r in topo.regions
                  if (f := region_figures(r)) is not None
                  and any(topo.device(d).host_bridge == hb for d in r.devices)]
        latency[node] = max(behind, default=fastest)
    for w, node in zip(topo.windows, window_nodes(topo), strict=True):
        on = [f.read_latency for r in topo.regions
              if r.window == w.id and (f := region_figures(r)) is not None]
        latency[node] = max(on, default=fastest)
    out = []
    for a in sorted(latency):
        for b in sorted(latency):
            d = LOCAL_DISTANCE if a == b else \
                min(254, max(LOCAL_DISTANCE + 1, round(REMOTE_DISTANCE * latency[b] / fastest)))
            out.append((a, b, d))
    return out


def hmat_entries(topo: m.Topology) -> list[tuple[int, int, Figures]]:
    """(initiator, target, figures) for every initiator and every DRAM and generic-port node."""
    targets = dict(dram_figures(topo))
    gp = _genport_figures(topo)
    for node in genport_nodes(topo).values():
        targets[node] = gp
    return [(i, t, f) for i in _initiators(topo) for t, f in targets.items()]


def firmware_args(topo: m.Topology) -> list[str]:
    """``-machine hmat=on``, the generic ports and their nodes, SLIT and HMAT."""
    if not describes_performance(topo):
        return []
    out = ["-machine", "hmat=on"]
    for node in window_nodes(topo):
        out += ["-numa", f"node,nodeid={node}"]
    for hb, node in genport_nodes(topo).items():
        out += ["-numa", f"node,nodeid={node}",
                "-object", f"acpi-generic-port,id=gp.{hb},pci-bus={hb},node={node}"]
    for a, b, d in slit(topo):
        if a != b:
            out += ["-numa", f"dist,src={a},dst={b},val={d}"]
    kinds = (("read-latency", "latency", "read_latency", ""),
             ("write-latency", "latency", "write_latency", ""),
             ("read-bandwidth", "bandwidth", "read_bandwidth", "M"),
             ("write-bandwidth", "bandwidth", "write_bandwidth", "M"))
    for i, t, f in hmat_entries(topo):
        for dtype, key, attr, unit in kinds:
            out += ["-numa", f"hmat-lb,initiator={i},target={t},hierarchy=memory,"
                             f"data-type={dtype},{key}={getattr(f, attr)}{unit}"]
    return out


def device_figures(topo: m.Topology, device: m.Device) -> dict[str, Figures] | None:
    """Partition ("volatile"/"persistent") -> the figures its CDAT carries, or None
    where QEMU's own CDAT stays (no region of the device has figures, or it has
    dynamic capacity, whose CDAT QEMU builds with the regions it adds)."""
    if device.dc_size or not describes_performance(topo):
        return None
    found: dict[str, Figures] = {}
    for r in topo.regions:
        f = region_figures(r)
        if f is None or device.id not in r.devices:
            continue
        part = "volatile" if r.type == "ram" else "persistent"
        share = r.ways
        first = r.devices[0] == device.id
        lat = GENPORT_LATENCY + path_latency(device)

        def bw(total: int, share: int = share, first: bool = first) -> int:
            return total // share + (total % share if first else 0)

        found[part] = Figures(max(1, f.read_latency - lat), max(1, f.write_latency - lat),
                              bw(f.read_bandwidth), bw(f.write_bandwidth))
    if not found:
        return None
    for part, size in (("volatile", device.volatile), ("persistent", device.persistent)):
        if size and part not in found:
            found[part] = QEMU_DEVICE
    return found


def _latency_entry(ns: int) -> tuple[int, int]:
    """(base unit in ps, entry): Linux reads entry * base / 1000 ns, rounded up."""
    return 1000, ns


def _bandwidth_entry(mbs: int) -> tuple[int, int]:
    """(base unit in MB/s, entry) with the entry in 16 bits."""
    base = 1
    while mbs // base > 0xfffe:
        base *= 10
    return base, mbs // base


def cdat_table(device: m.Device, figures: dict[str, Figures]) -> bytes:
    """The device's CDAT: per partition a DSMAS, four DSLBIS and a DSEMTS, as QEMU's own."""
    body = b""
    parts = [("volatile", device.volatile, 0), ("persistent", device.persistent, device.volatile)]
    handle = 0
    for part, size, dpa in parts:
        if not size:
            continue
        f = figures[part]
        flags = _DSMAS_NONVOLATILE if part == "persistent" else 0
        body += struct.pack("<BBHBBHQQ", _DSMAS, 0, 24, handle, flags, 0, dpa, size)
        for dtype, value in ((_READ_LATENCY, f.read_latency), (_WRITE_LATENCY, f.write_latency),
                             (_READ_BANDWIDTH, f.read_bandwidth),
                             (_WRITE_BANDWIDTH, f.write_bandwidth)):
            base, entry = (_latency_entry(value) if dtype in (_READ_LATENCY, _WRITE_LATENCY)
                           else _bandwidth_entry(value))
            body += struct.pack("<BBHBBBBQHHHH", _DSLBIS, 0, 24, handle, 0, dtype, 0, base,
                                entry, 0, 0, 0)
        # EFI memory type: 1 = specific purpose (volatile), 2 = reserved (NV), as QEMU.
        body += struct.pack("<BBHBBHQQ", _DSEMTS, 0, 24, handle, 2 if flags else 1, 0, 0, size)
        handle += 1
    header = struct.pack("<IBB6xI", 16 + len(body), _CDAT_REVISION, 0, 0)
    checksum = (-sum(header + body)) & 0xff
    return header[:5] + bytes([checksum]) + header[6:] + body


def cdat_tables(topo: m.Topology) -> dict[str, bytes]:
    """Device id -> its CDAT, for every device whose CDAT the rig writes."""
    out = {}
    for d in topo.devices:
        figures = device_figures(topo, d)
        if figures is not None:
            out[d.id] = cdat_table(d, figures)
    return out
