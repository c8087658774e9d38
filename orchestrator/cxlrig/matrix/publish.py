"""After a matrix run: merge shards, remember, compare, and write what people read.

:func:`publish` turns a matrix directory into its dashboard, one JUnit file,
KCIDB JSON and a history entry, with the comparison against the run before
it. :func:`merge` first gathers the shards a CI engine ran as separate jobs
into one directory, as if one machine had run them all.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from cxlrig.errors import CxlrigError
from cxlrig.files import write_atomic
from cxlrig.matrix import history
from cxlrig.matrix.model import parse_shard
from cxlrig.matrix.record import CELLS_DIR, Cell, MatrixRun, cell_dir, load_run, write_run
from cxlrig.results import Check, Results, Run, Verdict

JUNIT_FILE = "junit.xml"
KCIDB_FILE = "kcidb.json"
CHANGES_FILE = "changes.json"


class MergeError(CxlrigError):
    """Shards that do not make one matrix run."""


def merge(shards: list[Path], out: Path) -> MatrixRun:
    """Gather shard directories of one matrix run into ``out``; the merged run.

    Every shard 1..N of the same matrix must be there, once. Cells come back
    in the plan's order (shard I holds cells I-1, I-1+N, ...), with their
    directories copied, so the result equals an unsharded run's.
    """
    if not shards:
        raise MergeError("no shard directories given")
    records = [load_run(d) for d in shards]
    names = {r.name for r in records}
    if len(names) != 1:
        raise MergeError(f"the shards are of different matrices: {', '.join(sorted(names))}")
    parsed = [parse_shard(r.shard) for r in records]
    counts = {n for _, n in parsed}
    if len(counts) != 1:
        raise MergeError(f"the shards split the matrix differently: "
                         f"{', '.join(r.shard for r in records)}")
    (n,) = counts
    by_index: dict[int, tuple[MatrixRun, Path]] = {}
    for (i, _), rec, d in zip(parsed, records, shards, strict=True):
        if i in by_index:
            raise MergeError(f"shard {i}/{n} is given twice: {by_index[i][1]} and {d}")
        by_index[i] = (rec, d)
    missing = [str(i) for i in range(1, n + 1) if i not in by_index]
    if missing:
        raise MergeError(f"shard(s) {', '.join(missing)} of {n} missing")
    if out.exists() and any(out.iterdir()):
        raise MergeError(f"{out} is not empty: merge into a new directory")
    total = sum(len(rec.cells) for rec, _ in by_index.values())
    ordered: list[Cell | None] = [None] * total
    for i, (rec, d) in by_index.items():
        for j, cell in enumerate(rec.cells):
            ordered[j * n + i - 1] = cell
            src = cell_dir(d, cell.key)
            if src.is_dir():
                shutil.copytree(src, cell_dir(out, cell.key), symlinks=True)
    if any(c is None for c in ordered):
        raise MergeError("the shards' cells do not interleave into one plan (were they run "
                         "from the same matrix file?)")
    first = by_index[1][0]
    kernels = {k: v for rec, _ in by_index.values() for k, v in rec.kernels.items()}
    finished = [rec.finished for rec, _ in by_index.values()]
    merged = replace(first, shard="1/1", cells=tuple(c for c in ordered if c is not None),
                     kernels=kernels,
                     finished=None if None in finished else max(f for f in finished if f))
    out.mkdir(parents=True, exist_ok=True)
    write_run(out, merged)
    (out / CELLS_DIR).mkdir(exist_ok=True)
    return load_run(out)


def as_results(run: MatrixRun, directory: Path) -> Results:
    """The cells as one results document (for JUnit): a suite per topology and scenario."""
    runs = []
    for c in run.cells:
        verdict = c.verdict or Verdict.ERROR
        runs.append(Run(
            scenario=f"{c.topology}.{c.scenario}", variant=c.variant, verdict=verdict,
            topology=c.topology, seconds=c.seconds, run_dir=c.results,
            reason=c.reason if verdict in (Verdict.SKIP, Verdict.UNJUDGED) else None,
            error=(c.outcome or c.reason or "did not run") if verdict is Verdict.ERROR
            else None,
            checks=tuple(Check(ok=k.ok, message=k.message) for k in c.checks),
            predicted="flaky: an error, then a pass on the retry" if c.flaky else ""))
    return Results(version=2, runs=tuple(runs), started=run.started, finished=run.finished,
                   cxlrig=run.cxlrig, directory=directory)


@dataclass(frozen=True)
class Published:
    run: MatrixRun
    run_id: int | None
    #: The run it was compared with (None: the first of its matrix).
    previous: history.RunRow | None
    changes: tuple[history.Change, ...]
    dashboard: Path
    junit: Path
    kcidb: Path

    @property
    def regressions(self) -> tuple[history.Change, ...]:
        return tuple(c for c in self.changes if c.regression)


def publish(directory: Path, *, history_db: Path | None = None,
            remember: bool = True) -> Published:
    """Dashboard, JUnit, KCIDB and (with ``remember``) a history entry for ``directory``."""
    run = load_run(directory)
    from cxlrig.matrix.dashboard import render_dashboard
    from cxlrig.matrix.export import kcidb
    from cxlrig.report import junit

    run_id = prev = None
    changes: list[history.Change] = []
    trends: dict[str, list[str | None]] = {}
    if remember:
        run_id = history.record(run, directory, history_db)
        prev = history.previous(run_id, history_db)
        if prev is not None:
            changes = history.compare(prev.id, run_id, history_db)
        trends = history.trends(run.name, run_id, path=history_db)
    write_atomic(directory / CHANGES_FILE, (json.dumps({
        "previous": prev.directory if prev else None,
        "changes": [c.__dict__ for c in changes]}, indent=1) + "\n").encode())
    regressions = [c.message for c in changes if c.regression]
    dash = render_dashboard(directory, run, trends=trends, regressions=regressions,
                            previous=prev.directory if prev else None)
    junit_path = junit.write(as_results(run, directory), directory / JUNIT_FILE)
    kc = directory / KCIDB_FILE
    write_atomic(kc, (json.dumps(kcidb(run), indent=1) + "\n").encode())
    return Published(run, run_id, prev, tuple(changes), dash, junit_path, kc)
