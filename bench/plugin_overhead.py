#!/usr/bin/env python3
"""What the memory plugin costs: one guest, the same workloads, seven ways.

Boots topologies/default.yaml with the guest kernel under single-threaded
TCG (as every plugin run is) and times boot to a shell (from the host) and
two dd runs by the guest's own clock (busybox ``time -p``, 10 ms steps): one
through a buffer bound to DRAM (node 0, --dram-mb, default 8000 MB so plain
TCG takes about as long as the 2000 MB the goals were set with) and one
bound to the CXL region's node (--cxl-mb, default 20 MB). Configurations:

  plain        no plugin
  empty        QEMU's tests/tcg/plugins/empty.c (the cost of having a plugin)
  nullcb       bench/plugins/nullcb.c: a callback per access that returns at
               once. No plugin that needs each access's address can be
               cheaper in QEMU 10.0: the API has no conditional memory
               callback, and inline ops never see an address.
  mem/cb       QEMU's tests/tcg/plugins/mem.c with callback=on: a callback
               per access that adds one to a scoreboard counter
  mem/inline   the same with inline=on: an inline add per access, no address.
               Only with --cpus 1: under thread=single with more vCPUs,
               QEMU 10.0's inline ops scale a shared constant in place.
  cxlrig       cxlrig-mem, every access, pages on, region added after bring-up
  cxlrig/16    cxlrig-mem with sample=16
  hotpages     QEMU's contrib/plugins/hotpages.c: RAM pages (by physical
               address; hash table under a mutex), I/O by virtual address
  hotpages/io  the same with io=on: only I/O accesses counted, RAM ones
               looked up and dropped

QEMU's plugins are built from the QEMU source that set-up unpacks into the
cache (never committed). Printed: medians of --repeat runs and their ratio
to plain, all measured in this one invocation, then the figures the goals
name.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from cxlrig import paths
from cxlrig.guest.boot import GuestImage, booted
from cxlrig.images.initramfs import build_initramfs
from cxlrig.images.kernel import build_kernel
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
REFERENCE = {"empty": "tests/tcg/plugins/empty.c", "hotpages": "contrib/plugins/hotpages.c",
             "mem": "tests/tcg/plugins/mem.c"}
#: The benchmark's own plugins, relative to this folder.
OWN = {"nullcb": "plugins/nullcb.c"}
#: Configurations other than plain and ours: plugin and its arguments.
OTHERS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "empty": ("empty", ()),
    "nullcb": ("nullcb", ()),
    "mem/cb": ("mem", (("callback", "on"),)),
    "mem/inline": ("mem", (("inline", "on"),)),
    "hotpages": ("hotpages", ()),
    "hotpages/io": ("hotpages", (("io", "on"),)),
}
#: Timed by the guest: busybox ``time -p`` prints "real SECONDS" on stderr.
WORKLOADS = {
    "dram": "time -p numactl --membind=0 dd if=/dev/zero of=/dev/null bs=1M count={dram_mb}",
    "cxl": "time -p numactl --membind={cxl} dd if=/dev/zero of=/dev/null bs=1M count={cxl_mb}",
}
REAL = re.compile(r"^real ([0-9]+\.[0-9]+)$", re.M)


def build_reference_plugins(force: bool = False) -> dict[str, Path]:
    """QEMU's plugins named in REFERENCE and ours in OWN, compiled into the cache
    by content hash."""
    src_root = paths.cache_dir() / "qemu-src"
    include = src_root / "include" / "qemu"
    sources = {**{name: src_root / rel for name, rel in REFERENCE.items()},
               **{name: Path(__file__).parent / rel for name, rel in OWN.items()}}
    glib_cflags = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], check=True,
                                 capture_output=True, text=True).stdout.split()
    glib_libs = subprocess.run(["pkg-config", "--libs", "glib-2.0"], check=True,
                               capture_output=True, text=True).stdout.split()
    gcc = subprocess.run(["gcc", "--version"], check=True, capture_output=True,
                         text=True).stdout
    out: dict[str, Path] = {}
    for name, src in sources.items():
        # Ours are held to the project's warnings; QEMU's are built as they come.
        warnings = ["-Wall", "-Wextra", "-Werror"] if name in OWN else []
        digest = hashlib.sha256()
        for part in (src.read_bytes(), (include / "qemu-plugin.h").read_bytes(),
                     " ".join(warnings + glib_cflags + glib_libs).encode(), gcc.encode()):
            digest.update(len(part).to_bytes(8, "little") + part)
        lib = paths.cache_dir() / "plugin" / "reference" / digest.hexdigest() / f"lib{name}.so"
        if force or not lib.is_file():
            lib.parent.mkdir(parents=True, exist_ok=True)
            tmp = lib.with_suffix(".tmp")
            subprocess.run(["gcc", "-O2", "-shared", "-fPIC", *warnings, *glib_cflags,
                            f"-I{include}",
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


def with_cpus(topo: Topology, cpus: int) -> Topology:
    """``topo`` with ``cpus`` vCPUs, each node keeping those of its CPUs that remain."""
    nodes = tuple(replace(n, cpus=tuple(c for c in n.cpus if c < cpus)) for n in topo.nodes)
    return replace(topo, cpus=cpus, nodes=nodes)


def memory_layout(topo: Topology, root: Path) -> MemoryLayout:
    return parse_mtree(paused_memory_tree(topo, root))


def one_run(topo: Topology, layout: MemoryLayout, kernel: Path, initrd: Path,
            config: str, plugins: dict[str, Path], root: Path, times: Times,
            sizes: dict[str, int]) -> None:
    run = RunDir.create(root, config.replace("/", "-"))
    ctl = root / f"{config.replace('/', '-')}.sock"
    plugin = None
    if config.startswith("cxlrig"):
        sample = 16 if config == "cxlrig/16" else 1
        plugin = Plugin(plugins["cxlrig"], plugin_args(
            dram_map(topo, layout), out=run.path / "plugin.json", control=ctl, sample=sample))
    elif config in OTHERS:
        name, args = OTHERS[config]
        plugin = Plugin(plugins[name], args)
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
            res = guest.session.run(command.format(cxl=cxl_node, **sizes))
            real = REAL.search(res.stderr)
            if res.status != 0 or real is None:
                raise RuntimeError(f"{config}: {command!r} failed: {res.stderr}")
            getattr(times, name).append(float(real.group(1)))
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


def goals(results: dict[str, Times]) -> None:
    """The figures the plugin's goals are stated in, on the DRAM workload."""
    med = statistics.median

    def dram(config: str) -> float | None:
        t = results.get(config)
        return med(t.dram) if t and t.dram else None

    plain, floor, exact, sampled, hot = (dram(c) for c in
                                         ("plain", "nullcb", "cxlrig", "cxlrig/16", "hotpages"))
    if plain is None:
        return
    print("goals, on the DRAM workload:")
    if exact is not None and hot is not None and hot > plain:
        print(f"  exact mode's overhead is {(exact - plain) / (hot - plain):.0%} of hotpages' "
              "(goal: at most 50%)")
    if sampled is not None:
        print(f"  sample=16 runs at {sampled / plain:.2f}x plain (goal: at most 1.50x)")
    if floor is not None:
        print(f"  an empty callback per access (nullcb) runs at {floor / plain:.2f}x plain: "
              "the floor for any plugin that sees each access's address")
        if sampled is not None and floor > plain:
            print(f"  sample=16 costs {(sampled - plain) / (floor - plain):.2f}x the floor's "
                  "overhead")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--configs",
                    default="plain,empty,nullcb,mem/cb,cxlrig,cxlrig/16,hotpages,hotpages/io")
    ap.add_argument("--dram-mb", type=int, default=8000)
    ap.add_argument("--cxl-mb", type=int, default=20)
    ap.add_argument("--cpus", type=int, help="vCPUs (default: the topology's, 2)")
    args = ap.parse_args()
    sizes = {"dram_mb": args.dram_mb, "cxl_mb": args.cxl_mb}
    configs = args.configs.split(",")

    topo = load(REPO / "topologies" / "default.yaml")
    if args.cpus is not None:
        if args.cpus < 1:
            ap.error(f"--cpus {args.cpus}: needs at least 1")
        topo = with_cpus(topo, args.cpus)
    if "mem/inline" in configs and topo.cpus != 1:
        ap.error("mem/inline needs --cpus 1 (QEMU 10.0's inline ops are unsafe with more "
                 "vCPUs under thread=single)")
    kernel, initrd = build_kernel("v2"), build_initramfs()
    plugins = {"cxlrig": build_plugin(), **build_reference_plugins()}
    results = {c: Times([], [], []) for c in configs}
    root = Path(tempfile.mkdtemp(prefix="cxlrig-bench-"))
    try:
        layout = memory_layout(topo, root)
        # Interleaved, so a slow spell of the host is spread over every config.
        for _ in range(args.repeat):
            for config in configs:
                one_run(topo, layout, kernel, initrd, config, plugins, root, results[config],
                        sizes)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = statistics.median
    base = results.get("plain")
    vcpus = f"{topo.cpus} vCPU" + ("s" if topo.cpus > 1 else "")
    print(f"{topo.name} ({vcpus}): guest kernel under TCG thread=single, "
          f"median of {args.repeat}, "
          "seconds (ratio to plain); boot by the host's clock, dd by the guest's")
    print(f"  {'config':<11} {'boot to shell':>20} {f'dd {args.dram_mb} MB on DRAM':>20} "
          f"{f'dd {args.cxl_mb} MB on CXL':>20}")
    for config, t in results.items():
        cells = []
        for name in ("boot", "dram", "cxl"):
            v = med(getattr(t, name))
            ratio = f"({v / med(getattr(base, name)):.2f}x)" if base else ""
            cells.append(f"{v:8.2f} {ratio:>9}")
        print(f"  {config:<11} " + " ".join(f"{c:>20}" for c in cells))
    goals(results)
    exact, sampled = results.get("cxlrig"), results.get("cxlrig/16")
    if exact and sampled and exact.shares and sampled.shares:
        print("per-node shares of each workload's phase, exact vs sample=16 (first run):")
        for name in WORKLOADS:
            e, s16 = exact.shares[name][0], sampled.shares[name][0]
            worst = max(abs(e.get(n, 0) - s16.get(n, 0)) for n in set(e) | set(s16))
            shares = ", ".join(f"node {n}: {e.get(n, 0):.2%} vs {s16.get(n, 0):.2%}"
                               for n in sorted(set(e) | set(s16)))
            print(f"  {name:<5} {shares}; largest difference {worst * 100:.2f} pp")


if __name__ == "__main__":
    main()
