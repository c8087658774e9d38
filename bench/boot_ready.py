#!/usr/bin/env python3
"""Boot-to-ready of the default topology against bare boots, in one run.

Ready means: a shell in the guest and, for the full boot, every region of
the YAML created, onlined and verified as a NUMA node. The bare boots use
the same kernel and initramfs: the same machine without the CXL bring-up,
and a machine with the same DRAM and no CXL devices at all. The three are
interleaved in each repetition; printed are the median with min-max of each,
and the median (min-max) of the full boot's ratio to each within a repetition.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchstats import DEFAULT_REPEAT, Spread, paired_ratios, repeat_arg

from cxlrig.guest.boot import GuestImage, booted
from cxlrig.images.initramfs import build_initramfs
from cxlrig.images.kernel import build_kernel
from cxlrig.machine.runner import RunDir
from cxlrig.topology import load

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--topology", default=str(REPO / "topologies" / "default.yaml"))
    ap.add_argument("--variant", default="v2")
    ap.add_argument("--repeat", type=repeat_arg, default=DEFAULT_REPEAT)
    args = ap.parse_args()

    topo = load(args.topology)
    no_cxl = replace(topo, host_bridges=(), root_ports=(), switches=(), devices=(),
                     windows=(), regions=())
    image = GuestImage(build_kernel(args.variant), build_initramfs())
    cases = {"full (boot + CXL bring-up)": (topo, True),
             "same machine, no bring-up": (topo, False),
             "DRAM only, no CXL devices": (no_cxl, False)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for name, (t, bring_up) in cases.items():
                start = time.monotonic()
                with booted(t, image, RunDir.create(Path(tmp), "bench"), accel="tcg",
                            bring_up_cxl=bring_up):
                    took = time.monotonic() - start
                times[name].append(took)

    full = times["full (boot + CXL bring-up)"]
    print(f"{topo.name}, kernel {args.variant}, TCG, {args.repeat} repetitions, interleaved "
          "(QEMU start to ready shell): median [min-max]; full/this per repetition")
    for name, values in times.items():
        print(f"  {name:30s} {Spread.of(values).show(unit=' s'):>28}   "
              f"full/this {paired_ratios(full, values).show(fmt='.2f', unit='x')}")

if __name__ == "__main__":
    main()
