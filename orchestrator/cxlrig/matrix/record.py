"""The matrix contract: what one matrix run (or shard) produced, as frozen dataclasses.

``cxlrig matrix run`` writes ``DIR/matrix.json`` (a :class:`MatrixRun`) and,
as each cell ends, ``DIR/cells/<key>/cell.json`` (a :class:`Cell`); the
dashboard, the history database, the CI exports and ``matrix merge`` read
these and nothing else, so a shard's artifact is enough to rebuild
everything. Each cell's own results directory (``results.json``, JUnit,
report) lives under its cell directory, as ``cxlrig run`` writes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cxlrig.errors import CxlrigError
from cxlrig.files import write_atomic
from cxlrig.results import Verdict

MATRIX_FILE = "matrix.json"
CELL_FILE = "cell.json"
CELLS_DIR = "cells"
#: The format of matrix.json and cell.json.
VERSION = 1


class MatrixRecordError(CxlrigError):
    """A matrix.json or cell.json that is missing or not in the expected format."""


@dataclass(frozen=True)
class KernelId:
    """Which kernel a variant booted: enough to tell two nights' kernels apart."""

    #: The name the matrix gives it (a built-in variant's name, or the user's label).
    label: str
    #: The built-in variant whose expectations apply (v1, v2, debug).
    like: str
    #: sha256 of the bzImage (first 16 hex digits).
    image_hash: str = ""
    #: Digest of the patch series, and of the config fragments ("" for a bzImage).
    patch_hash: str = ""
    config_hash: str = ""
    #: Where it came from: "built-in", a tree path, or a bzImage path.
    source: str = "built-in"


@dataclass(frozen=True)
class CellCheck:
    """One expectation of a cell's run, as the run judged it."""

    ok: bool
    message: str


@dataclass(frozen=True)
class Cell:
    """One scenario on one topology with one kernel: planned, then finished."""

    #: ``topology/variant/scenario``: unique in a matrix, and the cell's directory.
    key: str
    scenario: str
    topology: str
    variant: str
    #: Path of the scenario and topology files (as the plan resolved them).
    scenario_file: str = ""
    topology_file: str = ""
    #: sha256 (16 hex) of the topology file's bytes.
    topology_hash: str = ""
    #: None while planned; the final verdict once the cell ended.
    verdict: Verdict | None = None
    #: An ``error`` that passed on its retry.
    flaky: bool = False
    attempts: int = 0
    #: Wall seconds of the final attempt (boot, steps, shutdown).
    seconds: float | None = None
    #: Why it was skipped, or what stopped it; the run's one-line outcome.
    reason: str | None = None
    outcome: str = ""
    checks: tuple[CellCheck, ...] = ()
    #: Numbers the run produced, by name: boot and bring-up seconds,
    #: measurement points, plugin DRAM shares per phase.
    figures: Mapping[str, float] = field(default_factory=dict)
    #: Relative to the matrix directory: the cell's results dir and report.
    results: str | None = None
    report: str | None = None

    @property
    def done(self) -> bool:
        return self.verdict is not None


@dataclass(frozen=True)
class MatrixRun:
    """A matrix run, or one shard of it."""

    version: int
    #: The matrix's name and the file it was read from.
    name: str
    matrix_file: str
    #: ``I/N``: this directory holds the cells of shard I of N (``1/1``: all).
    shard: str
    started: str
    cells: tuple[Cell, ...]
    kernels: Mapping[str, KernelId] = field(default_factory=dict)
    finished: str | None = None
    qemu: str = ""
    cxlrig: str = ""
    #: The retries and per-cell timeout the matrix asked for.
    retries: int = 1
    timeout: float | None = None

    def cell(self, key: str) -> Cell | None:
        return next((c for c in self.cells if c.key == key), None)

    @property
    def exit_code(self) -> int:
        """0 every cell passed or skipped, 1 a check failed, 2 a cell could not complete."""
        verdicts = {c.verdict for c in self.cells}
        if Verdict.ERROR in verdicts or None in verdicts:
            return 2
        return 1 if Verdict.FAIL in verdicts else 0

    def count(self, verdict: Verdict) -> int:
        return sum(1 for c in self.cells if c.verdict is verdict)


@cache
def _run_adapter() -> TypeAdapter[MatrixRun]:
    return TypeAdapter(MatrixRun)


@cache
def _cell_adapter() -> TypeAdapter[Cell]:
    return TypeAdapter(Cell)


def _dump(adapter: TypeAdapter[Any], value: Any) -> bytes:
    return (json.dumps(adapter.dump_python(value, mode="json"), indent=1) + "\n").encode()


def write_run(directory: Path, run: MatrixRun) -> Path:
    path = directory / MATRIX_FILE
    write_atomic(path, _dump(_run_adapter(), run))
    return path


def cell_dir(directory: Path, key: str) -> Path:
    return directory / CELLS_DIR / key


def write_cell(directory: Path, cell: Cell) -> Path:
    path = cell_dir(directory, cell.key) / CELL_FILE
    write_atomic(path, _dump(_cell_adapter(), cell))
    return path


def _load(path: Path, adapter: TypeAdapter[Any]) -> Any:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MatrixRecordError(f"{path}: no such file (not a matrix run directory?)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MatrixRecordError(f"{path}: not readable JSON: {exc}") from None
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                 for e in exc.errors()[:20]]
        raise MatrixRecordError("\n".join(lines)) from None


def load_run(directory: str | Path) -> MatrixRun:
    """A matrix directory as it stands: the plan, with every finished cell's record."""
    directory = Path(directory)
    run: MatrixRun = _load(directory / MATRIX_FILE, _run_adapter())
    if run.version != VERSION:
        raise MatrixRecordError(f"{directory / MATRIX_FILE}: version {run.version} is not "
                                f"{VERSION}, the one this cxlrig reads")
    cells = []
    for planned in run.cells:
        path = cell_dir(directory, planned.key) / CELL_FILE
        cells.append(_load(path, _cell_adapter()) if path.is_file() else planned)
    return replace(run, cells=tuple(cells))
