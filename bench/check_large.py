#!/usr/bin/env python3
"""Time validate + argv + QMP check of the largest topology, beside the floor.

The floor is the same QEMU command started paused and quit over QMP with no
inspection: what any check must pay. Printed side by side from one run:
median of N repeats of each, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cxlrig.machine.check import check_topology
from cxlrig.machine.runner import Machine, RunDir
from cxlrig.qemu.args import QemuOptions, build_argv
from cxlrig.topology import load

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--topology", default=str(REPO / "topologies" / "large.yaml"))
    ap.add_argument("--repeat", type=int, default=5)
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

    med = statistics.median
    n_dev = len(topo.devices) + len(topo.root_ports) + len(topo.host_bridges) + sum(
        1 + len(s.downstream) for s in topo.switches)
    total = med(validate) + med(argv) + med(check)
    print(f"topology {topo.name}: {n_dev} QEMU devices, {len(topo.windows)} windows, "
          f"median of {args.repeat}")
    print(f"  validate          {med(validate) * 1000:8.1f} ms")
    print(f"  build argv        {med(argv) * 1000:8.1f} ms")
    print(f"  QMP check         {med(check) * 1000:8.1f} ms   (start paused, inspect, quit)")
    print(f"  total             {total * 1000:8.1f} ms")
    print(f"  floor (start+quit){med(floor) * 1000:8.1f} ms")
    print(f"  ratio total/floor {total / med(floor):8.2f}x")


if __name__ == "__main__":
    main()
