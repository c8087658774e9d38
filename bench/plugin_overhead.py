#!/usr/bin/env python3
"""What the memory plugin costs: one guest, the same workloads, six ways.

Boots topologies/default.yaml with the guest kernel under single-threaded
TCG (as every plugin run is) and times, from the host: boot to a shell, a
256 MiB dd through a buffer bound to DRAM (node 0) and a 4 MiB one bound to
the CXL region's node. Configurations:

  plain        no plugin
  empty        QEMU's tests/tcg/plugins/empty.c (the cost of having a plugin)
  cxlrig       cxlrig-mem, every access, pages on, region added after bring-up
  cxlrig/16    cxlrig-mem with sample=16
  hotpages     QEMU's contrib/plugins/hotpages.c: RAM pages (by physical
               address; hash table under a mutex), I/O by virtual address
  hotpages/io  the same with io=on: only I/O accesses counted, RAM ones
               looked up and dropped

QEMU's two plugins are built from the QEMU source that set-up unpacks into
the cache (never committed). Printed: medians of --repeat runs and their
ratio to plain, all measured in this one invocation.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cxlrig import paths
from cxlrig.build.initramfs import build_initramfs
from cxlrig.build.kernel import build_kernel
from cxlrig.guest.boot import GuestImage, booted
from cxlrig.machine.check import paused_memory_tree
from cxlrig.machine.runner import RunDir
from cxlrig.plugin import (
    Control,
    build_plugin,
    dram_map,
    load_results,
    map_args,
    parse_mtree,
    plugin_args,
    region_map,
)
from cxlrig.plugin.addrmap import MemoryLayout
from cxlrig.qemu.args import Plugin
from cxlrig.topology import Topology, load

REPO = Path(__file__).resolve().parents[1]
#: QEMU's own plugins, relative to the unpacked QEMU source.
REFERENCE = {"empty": "tests/tcg/plugins/empty.c", "hotpages": "contrib/plugins/hotpages.c"}
WORKLOADS = {
    "dram": "numactl --membind=0 dd if=/dev/zero of=/dev/null bs=1M count=256",
    "cxl": "numactl --membind={cxl} dd if=/dev/zero of=/dev/null bs=1M count=4",
}


def build_reference_plugins(force: bool = False) -> dict[str, Path]:
    """QEMU's empty and hotpages plugins, compiled into the cache by content hash."""
    src_root = paths.cache_dir() / "qemu-src"
    include = src_root / "include" / "qemu"
    glib_cflags = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], check=True,
                                 capture_output=True, text=True).stdout.split()
    glib_libs = subprocess.run(["pkg-config", "--libs", "glib-2.0"], check=True,
                               capture_output=True, text=True).stdout.split()
    gcc = subprocess.run(["gcc", "--version"], check=True, capture_output=True,
                         text=True).stdout
    out: dict[str, Path] = {}
    for name, rel in REFERENCE.items():
        src = src_root / rel
        digest = hashlib.sha256()
        for part in (src.read_bytes(), (include / "qemu-plugin.h").read_bytes(),
                     " ".join(glib_cflags + glib_libs).encode(), gcc.encode()):
            digest.update(len(part).to_bytes(8, "little") + part)
        lib = paths.cache_dir() / "plugin" / "reference" / digest.hexdigest() / f"lib{name}.so"
        if force or not lib.is_file():
            lib.parent.mkdir(parents=True, exist_ok=True)
            tmp = lib.with_suffix(".tmp")
            subprocess.run(["gcc", "-O2", "-shared", "-fPIC", *glib_cflags, f"-I{include}",
                            "-o", str(tmp), str(src), *glib_libs], check=True)
            tmp.rename(lib)
        out[name] = lib
    return out


@dataclass
class Times:
    boot: list[float]
    dram: list[float]
    cxl: list[float]
    #: Per workload, per run: each node's share of the phase's accesses.
    shares: dict[str, list[dict[int, float]]] = field(default_factory=dict)


def memory_layout(topo: Topology, root: Path) -> MemoryLayout:
    return parse_mtree(paused_memory_tree(topo, root))


def one_run(topo: Topology, layout: MemoryLayout, kernel: Path, initrd: Path,
            config: str, plugins: dict[str, Path], root: Path, times: Times) -> None:
    run = RunDir.create(root, config.replace("/", "-"))
    ctl = root / f"{config.replace('/', '-')}.sock"
    plugin = None
    if config.startswith("cxlrig"):
        sample = 16 if config == "cxlrig/16" else 1
        plugin = Plugin(plugins["cxlrig"], plugin_args(
            dram_map(topo, layout), out=run.path / "plugin.json", control=ctl, sample=sample))
    elif config == "hotpages":
        plugin = Plugin(plugins["hotpages"])
    elif config == "hotpages/io":
        plugin = Plugin(plugins["hotpages"], (("io", "on"),))
    elif config == "empty":
        plugin = Plugin(plugins["empty"])
    with booted(topo, GuestImage(kernel, initrd), run, plugin=plugin) as guest:
        times.boot.append(guest.boot_seconds)
        cxl_node = guest.regions[0].node
        control = Control(ctl) if config.startswith("cxlrig") else None
        if control is not None:
            control.connect()
            control.add(map_args(region_map(topo, layout,
                                            {r.id: r.base for r in guest.regions})))
            control.reset()
        for name, command in WORKLOADS.items():
            t0 = time.perf_counter()
            res = guest.session.run(command.format(cxl=cxl_node))
            elapsed = time.perf_counter() - t0
            if res.status != 0:
                raise RuntimeError(f"{config}: {command!r} failed: {res.stderr}")
            getattr(times, name).append(elapsed)
            if control is not None:
                control.snapshot(name)  # one phase per workload, for the shares
        if control is not None:
            control.close()
    if config.startswith("cxlrig"):
        res_file = load_results(run.path / "plugin.json")
        for name in WORKLOADS:
            phase = res_file.phase(name)
            total = phase.node_accesses or 1
            times.shares.setdefault(name, []).append(
                {n: c.total / total for n, c in phase.nodes.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--configs", default="plain,empty,cxlrig,cxlrig/16,hotpages,hotpages/io")
    args = ap.parse_args()
    configs = args.configs.split(",")

    topo = load(REPO / "topologies" / "default.yaml")
    kernel, initrd = build_kernel("v2"), build_initramfs()
    plugins = {"cxlrig": build_plugin(), **build_reference_plugins()}
    results = {c: Times([], [], []) for c in configs}
    root = Path(tempfile.mkdtemp(prefix="cxlrig-bench-"))
    try:
        layout = memory_layout(topo, root)
        # Interleaved, so a slow spell of the host is spread over every config.
        for _ in range(args.repeat):
            for config in configs:
                one_run(topo, layout, kernel, initrd, config, plugins, root, results[config])
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = statistics.median
    base = results.get("plain")
    print(f"{topo.name}: guest kernel under TCG thread=single, median of {args.repeat}, "
          "seconds (ratio to plain)")
    print(f"  {'config':<10} {'boot to shell':>20} {'dd 256 MiB on DRAM':>20} "
          f"{'dd 4 MiB on CXL':>20}")
    for config, t in results.items():
        cells = []
        for name in ("boot", "dram", "cxl"):
            v = med(getattr(t, name))
            ratio = f"({v / med(getattr(base, name)):.2f}x)" if base else ""
            cells.append(f"{v:8.2f} {ratio:>9}")
        print(f"  {config:<10} " + " ".join(f"{c:>20}" for c in cells))
    exact, sampled = results.get("cxlrig"), results.get("cxlrig/16")
    if exact and sampled and exact.shares and sampled.shares:
        print("per-node shares of each workload's phase, exact vs sample=16 (first run):")
        for name in WORKLOADS:
            e, s16 = exact.shares[name][0], sampled.shares[name][0]
            worst = max(abs(e.get(n, 0) - s16.get(n, 0)) for n in set(e) | set(s16))
            cells = ", ".join(f"node {n}: {e.get(n, 0):.2%} vs {s16.get(n, 0):.2%}"
                              for n in sorted(set(e) | set(s16)))
            print(f"  {name:<5} {cells}; largest difference {worst * 100:.2f} pp")


if __name__ == "__main__":
    main()
