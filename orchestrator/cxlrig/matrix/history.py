"""What every matrix run did, remembered in SQLite, and what changed between two.

One database (``runs/history.sqlite`` or ``$CXLRIG_HISTORY``) holds every
recorded matrix run: its cells (verdict, flaky, attempts, seconds, the
kernel's identity, the topology's hash) and the figures each cell produced.
:func:`compare` lists what changed from an older run to a newer one: verdict
changes, new flakes, and figures outside the band the previous runs' spread
draws (not a fixed percentage: a figure as noisy as TCG timings gets a wide
band, a stable one a narrow band).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxlrig.errors import CxlrigError
from cxlrig.matrix.record import MatrixRun
from cxlrig.paths import runs_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY,
  matrix TEXT NOT NULL,
  started TEXT NOT NULL,
  finished TEXT,
  directory TEXT NOT NULL,
  shard TEXT NOT NULL,
  qemu TEXT NOT NULL,
  cxlrig TEXT NOT NULL,
  UNIQUE (matrix, started, shard)
);
CREATE TABLE IF NOT EXISTS cells (
  run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  scenario TEXT NOT NULL,
  topology TEXT NOT NULL,
  variant TEXT NOT NULL,
  verdict TEXT,
  flaky INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  seconds REAL,
  outcome TEXT NOT NULL,
  topology_hash TEXT NOT NULL,
  kernel_like TEXT NOT NULL,
  kernel_image TEXT NOT NULL,
  kernel_patches TEXT NOT NULL,
  kernel_config TEXT NOT NULL,
  PRIMARY KEY (run, key)
);
CREATE TABLE IF NOT EXISTS figures (
  run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  name TEXT NOT NULL,
  value REAL NOT NULL,
  PRIMARY KEY (run, key, name)
);
"""

#: How many earlier runs a figure's noise band is drawn from.
BAND_RUNS = 5
#: Fewer earlier values than this draw no band (a figure is not judged yet).
BAND_MIN_VALUES = 3


class HistoryError(CxlrigError):
    """The history database cannot be read or does not hold the run asked for."""


def history_path() -> Path:
    env = os.environ.get("CXLRIG_HISTORY")
    return Path(env) if env else runs_dir() / "history.sqlite"


@contextlib.contextmanager
def connect(path: Path | None = None) -> Iterator[sqlite3.Connection]:
    path = path or history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, timeout=30)
        db.execute("PRAGMA foreign_keys = ON")
        db.executescript(SCHEMA)
    except sqlite3.Error as exc:
        raise HistoryError(f"{path}: not a usable history database: {exc}") from None
    try:
        with db:
            yield db
    finally:
        db.close()


def record(run: MatrixRun, directory: Path, path: Path | None = None) -> int:
    """Store ``run`` (replacing an earlier record of the same run); its id."""
    with connect(path) as db:
        db.execute("DELETE FROM runs WHERE matrix = ? AND started = ? AND shard = ?",
                   (run.name, run.started, run.shard))
        cur = db.execute(
            "INSERT INTO runs (matrix, started, finished, directory, shard, qemu, cxlrig) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run.name, run.started, run.finished, str(directory.resolve()), run.shard,
             run.qemu, run.cxlrig))
        run_id = cur.lastrowid
        assert run_id is not None
        for c in run.cells:
            k = run.kernels.get(c.variant)
            db.execute(
                "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, c.key, c.scenario, c.topology, c.variant,
                 c.verdict.value if c.verdict else None, int(c.flaky), c.attempts, c.seconds,
                 c.outcome, c.topology_hash, k.like if k else "", k.image_hash if k else "",
                 k.patch_hash if k else "", k.config_hash if k else ""))
            db.executemany("INSERT INTO figures VALUES (?, ?, ?, ?)",
                           [(run_id, c.key, name, value) for name, value in c.figures.items()])
        return run_id


@dataclass(frozen=True)
class RunRow:
    id: int
    matrix: str
    started: str
    directory: str
    shard: str


def runs(matrix: str | None = None, path: Path | None = None) -> list[RunRow]:
    """Recorded runs, oldest first (of one matrix if named)."""
    with connect(path) as db:
        rows = db.execute(
            "SELECT id, matrix, started, directory, shard FROM runs "
            + ("WHERE matrix = ? " if matrix else "") + "ORDER BY started, id",
            (matrix,) if matrix else ()).fetchall()
    return [RunRow(*r) for r in rows]


def find_run(ref: str, path: Path | None = None) -> RunRow:
    """A run by its id, or by its directory."""
    known = runs(path=path)
    if ref.isdigit():
        found = [r for r in known if r.id == int(ref)]
    else:
        target = str(Path(ref).resolve())
        found = [r for r in known if r.directory == target]
    if not found:
        raise HistoryError(f"{ref}: no such run in {path or history_path()} "
                           f"({len(known)} recorded; 'cxlrig matrix history' lists them)")
    return found[-1]


def verdicts(run_id: int, path: Path | None = None) -> dict[str, tuple[str | None, bool]]:
    with connect(path) as db:
        rows = db.execute("SELECT key, verdict, flaky FROM cells WHERE run = ?",
                          (run_id,)).fetchall()
    return {k: (v, bool(f)) for k, v, f in rows}


def trends(matrix: str, upto: int, count: int = 8,
           path: Path | None = None) -> dict[str, list[str | None]]:
    """Each cell's verdicts over the last ``count`` runs up to run ``upto``, oldest first."""
    ids = [r.id for r in runs(matrix, path) if r.id <= upto][-count:]
    per_run = [verdicts(i, path) for i in ids]
    keys = set().union(*per_run) if per_run else set()
    return {k: [v.get(k, (None, False))[0] for v in per_run] for k in sorted(keys)}


def _figures(run_id: int, db: sqlite3.Connection) -> dict[tuple[str, str], float]:
    rows = db.execute("SELECT key, name, value FROM figures WHERE run = ?", (run_id,))
    return {(k, n): v for k, n, v in rows}


@dataclass(frozen=True)
class Band:
    low: float
    high: float
    values: int


def band(values: Sequence[float]) -> Band | None:
    """The range earlier values say a new one should fall in, or None with too few.

    The median plus and minus three times the larger of the values' median
    absolute deviation (scaled to a normal sigma) and half their range: wide
    for a noisy figure, narrow for a steady one, and never a fixed percentage.
    """
    if len(values) < BAND_MIN_VALUES:
        return None
    mid = statistics.median(values)
    mad = 1.4826 * statistics.median(abs(v - mid) for v in values)
    spread = max(mad, (max(values) - min(values)) / 2)
    return Band(mid - 3 * spread, mid + 3 * spread, len(values))


@dataclass(frozen=True)
class Change:
    #: "verdict", "new-error", "new-skip", "flaky", "figure", "new-cell", "gone"
    kind: str
    key: str
    message: str
    #: A regression (makes compare exit 1), or a change worth reading.
    regression: bool


def compare(old: int, new: int, path: Path | None = None) -> list[Change]:
    """What changed from run ``old`` to run ``new`` (regressions first)."""
    before, after = verdicts(old, path), verdicts(new, path)
    changes: list[Change] = []
    for key in sorted(set(before) | set(after)):
        if key not in before:
            changes.append(Change("new-cell", key, f"{key}: new cell, {after[key][0]}",
                                  after[key][0] in ("fail", "error")))
            continue
        if key not in after:
            changes.append(Change("gone", key, f"{key}: not in the new run", False))
            continue
        (v0, f0), (v1, f1) = before[key], after[key]
        if v0 != v1:
            worse = v1 in ("fail", "error") or (v0 == "pass" and v1 == "skip")
            kind = {"error": "new-error", "skip": "new-skip"}.get(v1 or "", "verdict")
            changes.append(Change(kind, key, f"{key}: {v0} -> {v1}", worse))
        if f1 and not f0:
            changes.append(Change("flaky", key, f"{key}: flaky (an error, then a pass on "
                                  "the retry)", True))
    changes += _figure_changes(new, path)
    return sorted(changes, key=lambda c: (not c.regression, c.key, c.kind))


def _figure_changes(new: int, path: Path | None) -> list[Change]:
    row = next(r for r in runs(path=path) if r.id == new)
    earlier = [r.id for r in runs(row.matrix, path) if r.id < new][-BAND_RUNS:]
    out = []
    with connect(path) as db:
        now = _figures(new, db)
        past = [_figures(i, db) for i in earlier]
    for (key, name), value in sorted(now.items()):
        values = [p[(key, name)] for p in past if (key, name) in p]
        b = band(values)
        if b is None or b.low <= value <= b.high:
            continue
        worse = worse_when(name)
        regression = worse is None or (value > b.high) == (worse == "higher")
        out.append(Change("figure", key, f"{key}: {name} = {value:.6g}, outside "
                          f"[{b.low:.6g}, {b.high:.6g}] (the band of the last {b.values} "
                          "runs)", regression))
    return out


def worse_when(figure: str) -> str | None:
    """Which way a figure gets worse: times grow, DRAM shares after promotion shrink.

    None when the name does not say: then either way is a regression.
    """
    if figure.endswith("_s") or " ns" in figure or "per page" in figure:
        return "higher"
    if figure.startswith("dram_share"):
        return "lower"
    return None


def previous(run_id: int, path: Path | None = None) -> RunRow | None:
    """The run of the same matrix recorded just before ``run_id``."""
    row = next((r for r in runs(path=path) if r.id == run_id), None)
    if row is None:
        return None
    earlier = [r for r in runs(row.matrix, path) if r.id < run_id]
    return earlier[-1] if earlier else None
