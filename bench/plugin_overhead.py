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
cache (never committed). Configurations are interleaved in every repetition
(--repeat, default 3). Printed: each figure's median [min-max] over the
repetitions, its ratio to plain as the median [min-max] of the ratios within
a repetition, then the figures the goals name, each with its spread.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchstats import DEFAULT_REPEAT, Spread, paired_ratios, repeat_arg

from cxlrig import paths
from cxlrig.guest.boot import GuestImage, booted
from cxlrig.images.initramfs import build_initramfs
from cxlrig.images.kernel import build_kernel
from cxlrig.machine.runner import Machine, RunDir
from cxlrig.plugin import (
    AddressMap,
    Control,
    build_plugin,
    dram_map,
    load_results,
    map_args,
    plugin_args,
    region_map,
)
from cxlrig.qemu.args import Plugin
from cxlrig.qemu.mtree import MemoryLayout
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


CONFIGS = ("plain", "cxlrig", "cxlrig/16", *OTHERS)


def one_run(topo: Topology, kernel: Path, initrd: Path, config: str, plugins: dict[str, Path],
            root: Path, times: Times, sizes: dict[str, int]) -> None:
    run = RunDir.create(root, config.replace("/", "-"))
    ctl = root / f"{config.replace('/', '-')}.sock"
    plugin = None
    control = Control(ctl) if config.startswith("cxlrig") else None
    layouts: list[MemoryLayout] = []

    def before_start(machine: Machine, layout: MemoryLayout) -> None:
        # As every plugin run does: the DRAM map before the first instruction.
        layouts.append(layout)
        if control is not None:
            control.connect()
            control.add(map_args(dram_map(topo, layout)))

    if control is not None:
        sample = 16 if config == "cxlrig/16" else 1
        plugin = Plugin(plugins["cxlrig"], plugin_args(
            AddressMap(), out=run.path / "plugin.json", control=ctl, sample=sample))
    elif config in OTHERS:
        name, args = OTHERS[config]
        plugin = Plugin(plugins[name], args)
    with booted(topo, GuestImage(kernel, initrd), run, plugin=plugin,
                before_start=before_start) as guest:
        times.boot.append(guest.boot_seconds)
        cxl_node = guest.regions[0].node
        if control is not None:
            control.add(map_args(region_map(topo, layouts[0],
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
    """The figures the plugin's goals are stated in, on the DRAM workload, each the
    median [min-max] over repetitions of figures computed within one repetition."""
    def dram(config: str) -> list[float] | None:
        t = results.get(config)
        return t.dram if t and t.dram else None

    plain, floor, exact, sampled, hot = (dram(c) for c in
                                         ("plain", "nullcb", "cxlrig", "cxlrig/16", "hotpages"))
    if plain is None:
        return

    def share_of_overhead(these: list[float], other: list[float]) -> Spread | None:
        pairs = [(a - p) / (b - p) for a, b, p in zip(these, other, plain, strict=True)
                 if b > p]
        return Spread.of(pairs) if pairs else None

    print("goals, on the DRAM workload (median [min-max] over repetitions):")
    if exact is not None and hot is not None:
        share = share_of_overhead(exact, hot)
        if share is not None:
            print(f"  exact mode's overhead is {share.show(fmt='.0%')} of hotpages' "
                  "(goal: at most 50%)")
    if sampled is not None:
        print(f"  sample=16 runs at {paired_ratios(sampled, plain).show(unit='x')} plain "
              "(goal: at most 1.50x)")
    if floor is not None:
        print(f"  an empty callback per access (nullcb) runs at "
              f"{paired_ratios(floor, plain).show(unit='x')} plain: the floor for any plugin "
              "that sees each access's address")
        if sampled is not None:
            share = share_of_overhead(sampled, floor)
            if share is not None:
                print(f"  sample=16 costs {share.show(unit='x')} the floor's overhead")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=repeat_arg, default=DEFAULT_REPEAT)
    ap.add_argument("--configs",
                    default="plain,empty,nullcb,mem/cb,cxlrig,cxlrig/16,hotpages,hotpages/io",
                    help=f"comma-separated, from: {', '.join(CONFIGS)}")
    ap.add_argument("--dram-mb", type=int, default=8000)
    ap.add_argument("--cxl-mb", type=int, default=20)
    ap.add_argument("--cpus", type=int, help="vCPUs (default: the topology's, 2)")
    args = ap.parse_args()
    sizes = {"dram_mb": args.dram_mb, "cxl_mb": args.cxl_mb}
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        ap.error(f"--configs: unknown {', '.join(unknown)} (known: {', '.join(CONFIGS)})")

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
        # Interleaved, so a slow spell of the host is spread over every config;
        # the order turns each repetition, so no config always follows another.
        for rep in range(args.repeat):
            for config in configs[rep % len(configs):] + configs[:rep % len(configs)]:
                one_run(topo, kernel, initrd, config, plugins, root, results[config], sizes)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = results.get("plain")
    vcpus = f"{topo.cpus} vCPU" + ("s" if topo.cpus > 1 else "")
    print(f"{topo.name} ({vcpus}): guest kernel under TCG thread=single, {args.repeat} "
          "repetitions, interleaved; seconds median [min-max], and the ratio to plain "
          "within a repetition; boot by the host's clock, dd by the guest's")
    for name, title in (("boot", "boot to shell"), ("dram", f"dd {args.dram_mb} MB on DRAM"),
                        ("cxl", f"dd {args.cxl_mb} MB on CXL")):
        print(f"  {title}:")
        for config, t in results.items():
            values = getattr(t, name)
            ratio = f"  {paired_ratios(values, getattr(base, name)).show(unit='x')}" \
                if base and config != "plain" else ""
            print(f"    {config:<11} {Spread.of(values).show(unit=' s'):>28}{ratio}")
    goals(results)
    exact, sampled = results.get("cxlrig"), results.get("cxlrig/16")
    if exact and sampled and exact.shares and sampled.shares:
        print("per-node shares of each workload's phase, exact vs sample=16, paired by "
              "repetition: the largest difference of any node, median [min-max]")
        for name in WORKLOADS:
            worst = []
            for e, s16 in zip(exact.shares[name], sampled.shares[name], strict=True):
                worst.append(100 * max(abs(e.get(n, 0) - s16.get(n, 0))
                                       for n in set(e) | set(s16)))
            first = exact.shares[name][0]
            shares = ", ".join(f"node {n}: {first.get(n, 0):.2%}" for n in sorted(first))
            print(f"  {name:<5} exact shares (first run) {shares}; largest difference "
                  f"{Spread.of(worst).show(unit=' pp')}")

if __name__ == "__main__":
    main()
