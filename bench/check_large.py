#!/usr/bin/env python3
"""Time validate + argv + QMP check of the largest topology, beside the floor.

The floor is the same QEMU command started paused and quit over QMP with no
inspection: what any check must pay. Printed side by side from one run:
median [min-max] of N repeats of each, and the ratio within a repetition.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchstats import Spread, paired_ratios, repeat_arg

from cxlrig.machine.check import check_topology
from cxlrig.machine.runner import Machine, RunDir
from cxlrig.qemu.args import QemuOptions, build_argv
from cxlrig.topology import load

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--topology", default=str(REPO / "topologies" / "large.yaml"))
    ap.add_argument("--repeat", type=repeat_arg, default=5)
    args = ap.parse_args()

    validate, argv, check, floor = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            topo = load(args.topology)
            t1 = time.perf_counter()
            build_argv(topo, QemuOptions(paused=True))
            t2 = time.perf_counter()
            report = check_topology(topo, RunDir.create(Path(tmp), "bench"))
            t3 = time.perf_counter()
            assert report.ok, report.mismatches
            with Machine(topo, QemuOptions(paused=True), RunDir.create(Path(tmp), "floor")):
                pass
            t4 = time.perf_counter()
            validate.append(t1 - t0)
            argv.append(t2 - t1)
            check.append(t3 - t2)
            floor.append(t4 - t3)

    n_dev = len(topo.devices) + len(topo.root_ports) + len(topo.host_bridges) + sum(
        1 + len(s.downstream) for s in topo.switches)
    total = [a + b + c for a, b, c in zip(validate, argv, check, strict=True)]

    def ms(values: list[float]) -> str:
        return Spread.of([v * 1000 for v in values]).show(fmt=".1f", unit=" ms")

    print(f"topology {topo.name}: {n_dev} QEMU devices, {len(topo.windows)} windows, "
          f"{args.repeat} repetitions, median [min-max]")
    print(f"  validate           {ms(validate)}")
    print(f"  build argv         {ms(argv)}")
    print(f"  QMP check          {ms(check)}   (start paused, inspect, quit)")
    print(f"  total              {ms(total)}")
    print(f"  floor (start+quit) {ms(floor)}")
    print(f"  total/floor        {paired_ratios(total, floor).show(unit='x')}")

if __name__ == "__main__":
    main()
