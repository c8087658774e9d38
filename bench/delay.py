#!/usr/bin/env python3
"""delay=on as the guest sees it: modelled against guest-measured extra latency.

Boots topologies/default.yaml once with the plugin's delay mode and, in each
of --repeat repetitions, runs the same pointer chase (hotcold chase: every
load depends on the one before) on DRAM and on the CXL node with the delay
switched off and on over the control socket (the order alternates between
repetitions). A CXL load under TCG is MMIO and its own cost varies a lot
from boot to boot on a busy host (636 ns in one boot, 1195 ns in the next
were seen), so the figures compare on and off *within* one boot. Host
interference only ever adds time to a chase (the distribution has a long
right tail), so three estimates are printed per node, each with its error
against the model: the median [min-max] of the paired differences on - off,
the difference of the lower quartiles, and that of the fastest chases,
min(on) - min(off), what the guest sees when the host does not get in the
way. Then what the plugin owed and slept over the run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchstats import paired_differences, repeat_arg

from cxlrig.guest.boot import booted
from cxlrig.guest.session import GuestSession
from cxlrig.images import guest_image
from cxlrig.machine.runner import RunDir
from cxlrig.plugin import load_results
from cxlrig.scenario.model import PluginSpec
from cxlrig.scenario.plugin import PluginSession
from cxlrig.scenario.runner import last_json_object
from cxlrig.topology import load

REPO = Path(__file__).resolve().parents[1]


def chase_ns(session: GuestSession, node: int, accesses: int) -> float:
    res = session.run(f"hotcold chase --node {node} --accesses {accesses}")
    report = last_json_object(res.stdout)
    if res.status != 0 or report is None or not report.get("placement_ok"):
        raise SystemExit(f"chase on node {node} failed: {res.stdout[-300:]} {res.stderr[-300:]}")
    return float(report["ns_per_access"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=repeat_arg, default=41, help="on/off pairs (default 41)")
    ap.add_argument("--accesses", type=repeat_arg, default=20_000, help="loads per chase")
    ap.add_argument("--topology", default=str(REPO / "topologies" / "default.yaml"))
    args = ap.parse_args()

    topo = load(args.topology)
    dram_lat = topo.nodes[0].performance.read_latency or 0
    region = topo.regions[0]
    modelled = {0: 0, region.node: (region.performance.read_latency or 0) - dram_lat}
    image = guest_image("v2")
    times: dict[tuple[int, bool], list[float]] = {(n, on): [] for n in modelled
                                                  for on in (False, True)}
    with tempfile.TemporaryDirectory(prefix="cxlrig-bench-") as tmp:
        run = RunDir.create(Path(tmp), "delay")
        session = PluginSession(PluginSpec(delay=True), topo, run.path)
        with booted(topo, image, run, plugin=session.plugin,
                    before_start=session.before_start) as guest:
            session.attach(guest)
            assert session.control is not None
            for rep in range(args.repeat):
                for on in ((False, True) if rep % 2 == 0 else (True, False)):
                    session.control.delay(on)
                    for node in modelled:
                        times[(node, on)].append(chase_ns(guest.session, node, args.accesses))
            session.control.snapshot("end")
        session.summary()
        res = load_results(run.path / "plugin.json")

    print(f"{topo.name}: pointer chase of {args.accesses} loads, delay off/on interleaved "
          f"in one boot, {args.repeat} pairs; ns per load")
    print(f"  {'node':<6} {'modelled':>8} {'paired on-off, median [min-max]':>38} {'error':>7} "
          f"{'Q1(on)-Q1(off)':>15} {'error':>7} {'min(on)-min(off)':>17} {'error':>7}")
    for node, extra in modelled.items():
        off, on = times[(node, False)], times[(node, True)]
        seen = paired_differences(on, off)
        quartile = statistics.quantiles(on, n=4)[0] - statistics.quantiles(off, n=4)[0]
        fastest = min(on) - min(off)

        def error(value: float, extra: int = extra) -> str:
            return f"{(value - extra) / extra:+.1%}" if extra else "-"

        print(f"  {node:<6} {extra:>8} {seen.show(fmt='.1f', unit=' ns'):>38} "
              f"{error(seen.median):>7} {quartile:>12.1f} ns {error(quartile):>7} "
              f"{fastest:>14.1f} ns {error(fastest):>7}")
    print(f"plugin: owed {res.delay_owed_ns} ns, slept {res.slept_ns} ns in {res.delay_sleeps} "
          f"sleeps, outstanding {res.delay_debt_ns} ns, largest oversleep "
          f"{res.delay_max_overshoot_ns} ns")


if __name__ == "__main__":
    main()
