"""Firmware performance tables: SLIT, HMAT, generic ports and the devices' CDAT.

The guest test (tests/guest/test_firmware_perf.py) checks what Linux makes of
them; these check the tables themselves, byte by byte where they are bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cxlrig.qemu import firmware as fw
from cxlrig.qemu.args import QemuOptions, build_argv
from cxlrig.topology import load, loads
from cxlrig.topology import model as m

from ..conftest import REPO, TOPOLOGIES

WITH_FIGURES = [p for p in TOPOLOGIES if fw.describes_performance(load(p))]


def parse_cdat(blob: bytes) -> list[tuple[int, bytes]]:
    """(type, structure) for each structure after the header; checks the header."""
    length, revision, checksum = struct.unpack_from("<IBB", blob)
    assert length == len(blob)
    assert revision == 1
    assert sum(blob) % 256 == 0, f"checksum byte {checksum:#x} does not zero the sum"
    out, off = [], 16
    while off < len(blob):
        kind, reserved, size = struct.unpack_from("<BBH", blob, off)
        assert reserved == 0 and size == 24, (kind, size)
        out.append((kind, blob[off:off + size]))
        off += size
    assert off == len(blob)
    return out


def dslbis(entries: list[tuple[int, bytes]]) -> dict[tuple[int, int], int]:
    """(handle, data type) -> the value Linux reads (latency in ns rounded up, MB/s)."""
    out = {}
    for kind, raw in entries:
        if kind != 1:
            continue
        _, _, _, handle, flags, dtype, _, base, entry, *_ = struct.unpack("<BBHBBBBQHHHH", raw)
        assert flags == 0  # memory, not a memory-side cache
        value = entry * base
        out[(handle, dtype)] = -(-value // 1000) if dtype in (1, 2) else value
    return out


def test_the_shipped_topologies_with_figures() -> None:
    names = {load(p).name for p in WITH_FIGURES}
    assert {"default", "cross-host-bridge", "numa-dram2-cxl", "tiered-dram3-cxl"} <= names


@pytest.mark.parametrize("path", [p for p in TOPOLOGIES if p not in WITH_FIGURES],
                         ids=lambda p: p.stem)
def test_no_figures_leaves_qemus_flat_machine(path: Path) -> None:
    topo = load(path)
    assert fw.firmware_args(topo) == []
    assert fw.cdat_tables(topo) == {}
    argv = build_argv(topo, QemuOptions(cdat_dir=Path("RUN")))
    assert "hmat=on" not in argv and not any("cdat=" in a for a in argv)


@pytest.mark.parametrize("path", WITH_FIGURES, ids=lambda p: p.stem)
def test_each_region_adds_up_to_its_figures(path: Path) -> None:
    """What Linux 6.12 computes per region (generic port + path + device's
    DSLBIS; worst latency, summed bandwidth) equals the topology's figures."""
    topo = load(path)
    tables = fw.cdat_tables(topo)
    for region in topo.regions:
        want = fw.region_figures(region)
        if want is None:
            continue
        read_lat, write_lat, read_bw, write_bw = [], [], 0, 0
        for dev_id in region.devices:
            device = topo.device(dev_id)
            values = dslbis(parse_cdat(tables[dev_id]))
            handle = 0 if region.type == "ram" else int(bool(device.volatile))
            extra = fw.GENPORT_LATENCY + fw.path_latency(device)
            read_lat.append(values[(handle, 1)] + extra)
            write_lat.append(values[(handle, 2)] + extra)
            read_bw += values[(handle, 4)]
            write_bw += values[(handle, 5)]
        assert (max(read_lat), max(write_lat), read_bw, write_bw) == (
            want.read_latency, want.write_latency, want.read_bandwidth, want.write_bandwidth)


def test_path_latency_counts_links_and_the_switch() -> None:
    default = load(REPO / "topologies" / "default.yaml")  # behind a switch
    direct = load(REPO / "topologies" / "numa-dram2-cxl.yaml")  # on a root port
    assert fw.path_latency(default.device("mem0")) == 2 * fw.LINK_LATENCY + 150
    assert fw.path_latency(direct.device("mem0")) == fw.LINK_LATENCY


PMEM = """
name: pmem-figures
machine: {cpus: 1, nodes: [{memory: 512M, performance: {read_latency: 90}}]}
cxl:
  host_bridges: [{id: hb0}]
  root_ports: [{id: rp0, host_bridge: hb0}, {id: rp1, host_bridge: hb0}]
  devices: [{id: both, attach: rp0, volatile: 256M, persistent: 512M},
            {id: dc, attach: rp1, dynamic_capacity: {size: 256M}}]
  windows: [{id: w0, targets: [hb0], size: 4G}]
  regions:
    - {id: r0, window: w0, type: pmem, devices: [both],
       performance: {read_latency: 400, read_bandwidth: 70000}}
"""


def test_cdat_of_a_device_with_two_partitions() -> None:
    topo = loads(PMEM)
    tables = fw.cdat_tables(topo)
    # Dynamic capacity keeps QEMU's own CDAT (QEMU builds it with the DC regions).
    assert set(tables) == {"both"}
    entries = parse_cdat(tables["both"])
    assert [k for k, _ in entries] == [0, 1, 1, 1, 1, 4] * 2
    dsmas = [struct.unpack("<BBHBBHQQ", raw) for k, raw in entries if k == 0]
    # handle, flags (non-volatile), DPA base, length: volatile first, as QEMU lays them out.
    assert [(d[3], d[4], d[6], d[7]) for d in dsmas] == [
        (0, 0, 0, 256 << 20), (1, 4, 256 << 20, 512 << 20)]
    dsemts = [struct.unpack("<BBHBBHQQ", raw) for k, raw in entries if k == 4]
    assert [(d[3], d[4], d[7]) for d in dsemts] == [(0, 1, 256 << 20), (1, 2, 512 << 20)]
    values = dslbis(entries)
    # The persistent partition carries the region's figures (one latency given
    # stands for both; 70000 MB/s needs a base unit of 10 to fit 16 bits) ...
    extra = fw.GENPORT_LATENCY + fw.LINK_LATENCY
    assert [values[(1, t)] for t in (1, 2, 4, 5)] == [400 - extra, 400 - extra, 70000, 70000]
    # ... the volatile one, in no region, what QEMU's own CDAT says.
    q = fw.QEMU_DEVICE
    assert [values[(0, t)] for t in (1, 2, 4, 5)] == [
        q.read_latency, q.write_latency, q.read_bandwidth, q.write_bandwidth]


def test_a_region_faster_than_its_path_gets_the_smallest_device_latency() -> None:
    topo = loads(PMEM.replace("read_latency: 400", "read_latency: 2"))
    values = dslbis(parse_cdat(fw.cdat_tables(topo)["both"]))
    assert values[(1, 1)] == 1


@pytest.mark.parametrize("path", WITH_FIGURES, ids=lambda p: p.stem)
def test_slit_is_complete_and_orders_as_the_latencies(path: Path) -> None:
    topo = load(path)
    dist = {(a, b): d for a, b, d in fw.slit(topo)}
    nodes = {a for a, _ in dist}
    assert set(dist) == {(a, b) for a in nodes for b in nodes}  # QEMU wants every pair
    assert all(dist[(a, a)] == 10 for a in nodes)
    assert all(11 <= d <= 254 for (a, b), d in dist.items() if a != b)
    lat = fw.dram_figures(topo)
    for a in lat:
        for b in lat:
            for c in lat:
                if a not in (b, c) and lat[b].read_latency < lat[c].read_latency:
                    assert dist[(a, b)] < dist[(a, c)], (a, b, c)


def test_tiered_slit_and_hmat() -> None:
    topo = load(REPO / "topologies" / "tiered-dram3-cxl.yaml")
    dist = {(a, b): d for a, b, d in fw.slit(topo)}
    assert (dist[(0, 1)], dist[(1, 0)], dist[(0, 2)], dist[(2, 0)]) == (20, 20, 30, 20)
    hmat = fw.hmat_entries(topo)
    # Every node with CPUs is an initiator, every DRAM node and generic port a target.
    gp = fw.genport_nodes(topo)["hb0"]
    assert {(i, t) for i, t, _ in hmat} == {(i, t) for i in (0, 1) for t in (0, 1, 2, gp)}
    figures = {t: f for i, t, f in hmat if i == 1}
    assert figures[2] == fw.Figures(120, 140, 20000, 15000)
    assert figures[gp] == fw.Figures(1, 1, 30000, 30000)


def test_generic_ports_stay_clear_of_the_windows_domains() -> None:
    # Linux numbers each window's proximity domain after the last DRAM node's:
    # a generic port there would be read as the CXL node itself.
    topo = load(REPO / "topologies" / "cross-host-bridge.yaml")
    assert fw.window_nodes(topo) == [1]
    assert fw.genport_nodes(topo) == {"hb0": 2, "hb1": 3}
    argv = fw.firmware_args(topo)
    assert argv[:10] == ["-machine", "hmat=on", "-numa", "node,nodeid=1",
                         "-numa", "node,nodeid=2",
                         "-object", "acpi-generic-port,id=gp.hb0,pci-bus=hb0,node=2",
                         "-numa", "node,nodeid=3"]


def test_performance_one_figure_stands_for_both() -> None:
    assert m.Performance(read_latency=5).latencies == (5, 5)
    assert m.Performance(write_bandwidth=7).bandwidths == (7, 7)
    assert m.Performance(read_latency=5, write_latency=6).latencies == (5, 6)
    assert m.Performance().latencies is None and not m.Performance().given
