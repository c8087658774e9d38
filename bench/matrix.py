#!/usr/bin/env python3
"""What a matrix run costs, and where the time goes.

1. ``--jobs 2`` against ``--jobs 1`` on the same matrix (matrices/smoke.yaml
   by default), interleaved over repetitions: wall seconds of each, median
   [min-max], and the speedup paired within a repetition.
2. For each cell of every run (and of ``--nightly DIR``, a finished nightly
   run if given): the overhead, everything but the scenario's own steps
   (boot, bring-up, QEMU start and stop, the child process), as a share of
   the cell's time; and boot seconds by topology, to see how boot grows with
   the device count.
3. With ``--nightly DIR``: that run's wall time and which topologies and
   scenarios its cell-seconds went to.

Nothing here is asserted; it is printed, with the spread, for the note.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchstats import Spread, paired_ratios, repeat_arg

from cxlrig.matrix.model import load_matrix
from cxlrig.matrix.record import MatrixRun, load_run
from cxlrig.matrix.runner import run_matrix
from cxlrig.results import Verdict, load_results

REPO = Path(__file__).resolve().parents[1]


def step_seconds(directory: Path, results: str | None) -> float | None:
    if results is None:
        return None
    try:
        res = load_results(directory / results)
    except Exception:  # a cell that recorded nothing: no figure
        return None
    return sum(s.seconds or 0.0 for r in res.runs for s in r.steps)


def overheads(directory: Path, run: MatrixRun) -> tuple[list[float], dict[str, list[float]]]:
    shares, boots = [], collections.defaultdict(list)
    for c in run.cells:
        if c.verdict not in (Verdict.PASS, Verdict.FAIL) or not c.seconds:
            continue
        steps = step_seconds(directory, c.results)
        if steps is not None:
            shares.append((c.seconds - steps) / c.seconds)
        if "boot_s" in c.figures:
            boots[c.topology].append(c.figures["boot_s"])
    return shares, boots


def wall(run: MatrixRun) -> float | None:
    if run.finished is None:
        return None
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (datetime.strptime(run.finished, fmt) - datetime.strptime(run.started, fmt)
            ).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default=str(REPO / "matrices" / "smoke.yaml"))
    ap.add_argument("--repeat", type=repeat_arg, default=3)
    ap.add_argument("--nightly", type=Path, help="a finished nightly matrix run directory")
    ap.add_argument("--only-nightly", action="store_true",
                    help="with --nightly: only read that run, run nothing")
    args = ap.parse_args()

    plan = load_matrix(args.matrix)
    times: dict[int, list[float]] = {1: [], 2: []}
    shares: list[float] = []
    boots: dict[str, list[float]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="cxlrig-bench-matrix-") as tmp:
        for rep in range(0 if args.only_nightly else args.repeat):
            for jobs in ((1, 2) if rep % 2 == 0 else (2, 1)):
                out = Path(tmp) / f"r{rep}-j{jobs}"
                start = time.monotonic()
                run = run_matrix(plan, out, jobs=jobs)
                times[jobs].append(time.monotonic() - start)
                s, b = overheads(out, run)
                shares += s
                for k, v in b.items():
                    boots[k] += v
                print(f"rep {rep + 1} jobs {jobs}: {times[jobs][-1]:.1f} s, "
                      f"exit {run.exit_code}", flush=True)
    if times[1]:
        print(f"\nmatrix {plan.spec.name}: {len(plan.cells)} cells, {args.repeat} repetitions")
        print(f"  --jobs 1: {Spread.of(times[1]).show('.1f', ' s')}")
        print(f"  --jobs 2: {Spread.of(times[2]).show('.1f', ' s')}")
        print(f"  speedup (paired): {paired_ratios(times[1], times[2]).show('.2f', 'x')}")
    if args.nightly is not None:
        night = load_run(args.nightly)
        s, b = overheads(args.nightly, night)
        shares += s
        for k, v in b.items():
            boots[k] += v
        w = wall(night)
        print(f"\nnightly {args.nightly}: {len(night.cells)} cells, wall "
              f"{'unfinished' if w is None else f'{w / 60:.1f} min'}; "
              + ", ".join(f"{night.count(v)} {v.value}" for v in Verdict))
        for what in ("topology", "scenario"):
            per: dict[str, float] = collections.Counter()
            for c in night.cells:
                per[getattr(c, what)] += c.seconds or 0.0
            total = sum(per.values()) or 1.0
            top = sorted(per.items(), key=lambda kv: -kv[1])[:6]
            print(f"  cell-seconds by {what}: " + ", ".join(
                f"{k} {v:.0f} s ({100 * v / total:.0f}%)" for k, v in top))
    if shares:
        print(f"\nper-cell overhead (all but the steps), share of the cell: "
              f"{Spread.of([100 * s for s in shares]).show('.0f', '%')}")
    for topo, values in sorted(boots.items()):
        print(f"  boot to shell, {topo}: {Spread.of(values).show('.2f', ' s')}")
    json.dump({"jobs1": times[1], "jobs2": times[2], "overhead_shares": shares,
               "boots": boots}, sys.stderr)
    sys.stderr.write("\n")


if __name__ == "__main__":
    main()
