"""Running a matrix: every cell its own ``cxlrig run`` process, N at a time.

Kernels, the initramfs and the plugin are built once, before any cell
starts. Each cell is a child ``cxlrig run`` (its own QEMU, its own results
directory under ``cells/<key>/attempt-N``), so a cell that hangs or crashes
takes nothing else with it. The child gets SIGTERM if this process dies,
even of SIGKILL (``PR_SET_PDEATHSIG``), and its QEMU gets SIGKILL if the
child dies, so no machine outlives the command.

A finished cell writes ``cell.json``; ``--resume DIR`` runs again only the
cells that have none. A cell that ends in ``error`` is run again
(``retries``); passing on a retry makes it ``flaky``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from cxlrig import __version__
from cxlrig.errors import CxlrigError
from cxlrig.machine.runner import set_pdeathsig
from cxlrig.matrix.model import Plan, VariantSpec, shard_cells
from cxlrig.matrix.record import (
    VERSION,
    Cell,
    CellCheck,
    KernelId,
    MatrixRun,
    cell_dir,
    load_run,
    write_cell,
    write_run,
)
from cxlrig.results import Results, ResultsFormatError, Run, Verdict, load_results

log = logging.getLogger(__name__)

#: How long a child may take to stop after SIGTERM before it is killed.
STOP_GRACE_S = 60.0
#: The lines of a child's log an error message quotes.
LOG_TAIL = 15


class MatrixRunError(CxlrigError):
    """The matrix could not be run (an image could not be built, a bad --resume)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sha16(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def qemu_version() -> str:
    try:
        out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                             text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.splitlines()[0].strip() if out else ""


@dataclass(frozen=True)
class Kernel:
    path: Path
    id: KernelId


def build_kernels(variants: Iterable[VariantSpec], base: Path,
                  progress: Callable[[str], None], selftests: bool = False) -> dict[str, Kernel]:
    """Each variant's bzImage (built when needed) and identity, before any cell runs;
    with ``selftests``, the kernel's own selftests next to each built kernel."""
    from cxlrig.images.cache import digest
    from cxlrig.images.kernel import build_kernel, get_variant, load_series

    kernels: dict[str, Kernel] = {}
    for v in variants:
        made = load_series(base / v.series) if v.series is not None else get_variant(v.like)
        patch_hash = digest([p.read_bytes() for p in made.patches])[:16]
        config_hash = digest([f.read_bytes() for f in made.fragments])[:16]
        if v.kernel is not None:
            path = (base / v.kernel).expanduser().resolve()
            source, patch_hash, config_hash = str(path), "", ""
        else:
            tree = (base / v.tree).expanduser().resolve() if v.tree is not None else None
            progress(f"kernel {v.name}...")
            path = build_kernel(made, tree=tree,
                                progress=functools.partial(_prefixed, progress, v.name))
            if selftests:
                from cxlrig.images.selftests import build_selftests

                build_selftests(made, tree=tree,
                                progress=functools.partial(_prefixed, progress, v.name))
            origin = str(made.origin) if made.origin is not None else None
            source = (f"{origin} on {tree}" if origin and tree is not None else
                      str(tree) if tree is not None else origin or "built-in")
        kernels[v.name] = Kernel(path, KernelId(
            label=v.name, like=v.like, image_hash=sha16(path), patch_hash=patch_hash,
            config_hash=config_hash, source=source))
    return kernels


def _prefixed(progress: Callable[[str], None], name: str, line: str) -> None:
    progress(f"kernel {name}: {line}")


def build_shared(plan: Plan, progress: Callable[[str], None]) -> None:
    """What every cell shares: the initramfs, and the plugin if a scenario uses it."""
    from cxlrig.images.initramfs import build_initramfs

    progress("initramfs...")
    build_initramfs()
    if any(s.plugin is not None for s in plan.scenarios.values()):
        from cxlrig.plugin.build import build_plugin

        progress("plugin...")
        build_plugin()


def figures(run: Run) -> dict[str, float]:
    """The numbers a run produced, by a stable name, for the history."""
    out: dict[str, float] = {}
    if run.boot_seconds is not None:
        out["boot_s"] = round(run.boot_seconds, 3)
    if run.bring_up_seconds is not None:
        out["bring_up_s"] = round(run.bring_up_seconds, 3)
    for m in run.measurements:
        if m.y is not None:
            out[f"{m.series} [{m.x_name}={m.x:g}] {m.y_name}"] = m.y
    if run.plugin is not None:
        for ph in run.plugin.phases:
            if ph.name is not None and ph.dram_share is not None:
                out[f"dram_share [{ph.name}]"] = ph.dram_share
    return out


class CellRunner:
    """Runs one cell's attempts as child processes; stoppable from another thread."""

    def __init__(self, directory: Path, kernels: Mapping[str, Kernel], plan: Plan,
                 *, retries: int, timeout: float) -> None:
        self.directory = directory
        self.kernels = kernels
        self.plan = plan
        self.retries = retries
        self.timeout = timeout
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[bytes]] = set()
        self.stopping = threading.Event()

    def skip_reason(self, cell: Cell) -> str | None:
        lacks = self.plan.scenarios[cell.scenario].unmet(self.plan.topologies[cell.topology])
        like = self.plan.variant(cell.variant).like
        listed = self.plan.scenarios[cell.scenario].variants
        if like not in listed:
            lacks.append(f"the scenario lists only {', '.join(listed)}")
        return f"topology {cell.topology}: {'; '.join(lacks)}" if lacks else None

    def run(self, cell: Cell) -> Cell:
        reason = self.skip_reason(cell)
        if reason is not None:
            done = replace(cell, verdict=Verdict.SKIP, reason=reason, outcome=f"skipped: {reason}")
            write_cell(self.directory, done)
            return done
        here = cell_dir(self.directory, cell.key)
        # An attempt a kill interrupted is kept, renamed, and not counted.
        for old in here.glob("attempt-*"):
            if old.is_dir() and not old.name.endswith(".interrupted"):
                old.rename(old.with_name(old.name + ".interrupted"))
                with contextlib.suppress(OSError):
                    shutil.move(str(old) + ".log", str(old) + ".interrupted.log")
        result = cell
        errors = 0
        for attempt in range(1, self.retries + 2):
            if self.stopping.is_set():
                raise KeyboardInterrupt
            try:
                result = self._attempt(cell, attempt)
            except Exception as exc:  # our bug or the host's: the cell, not the matrix
                log.exception("cell %s: attempt %d", cell.key, attempt)
                why = f"the attempt could not be run: {type(exc).__name__}: {exc}"
                result = replace(cell, verdict=Verdict.ERROR, attempts=attempt,
                                 reason=why, outcome=why)
            if result.verdict is not Verdict.ERROR:
                break
            errors += 1
        if errors and result.verdict is Verdict.PASS:
            result = replace(result, flaky=True)
        if self.stopping.is_set():
            raise KeyboardInterrupt  # an interrupted attempt is not a finished cell
        write_cell(self.directory, result)
        return result

    def _attempt(self, cell: Cell, attempt: int) -> Cell:
        here = cell_dir(self.directory, cell.key)
        out = here / f"attempt-{attempt}"
        logfile = here / f"attempt-{attempt}.log"
        kernel = self.kernels[cell.variant]
        like = self.plan.variant(cell.variant).like
        argv = [sys.executable, "-m", "cxlrig.cli", "run", cell.scenario_file,
                "--topology", cell.topology_file, "--variant", like,
                "--kernel", str(kernel.path), "--results", str(out)]
        for f in self.plan.spec.files:
            argv += ["--add", f]
        here.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        status: int | None = None
        timed_out = False
        with open(logfile, "wb") as log_f:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=functools.partial(set_pdeathsig, signal.SIGTERM),
                env={**os.environ, "COLUMNS": "120"})
            with self._lock:
                self._live.add(proc)
            try:
                try:
                    status = proc.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    status = _stop(proc)
            finally:
                with self._lock:
                    self._live.discard(proc)
        seconds = time.monotonic() - start
        rel = os.path.relpath(out, self.directory)
        try:
            results = load_results(out)
        except ResultsFormatError:
            results = None
        run = _only_run(results)
        if timed_out or run is None:
            why = (f"timed out after {self.timeout:g} s and was stopped" if timed_out else
                   f"cxlrig run ended with status {status} and recorded no run")
            return replace(cell, verdict=Verdict.ERROR, attempts=attempt, seconds=seconds,
                           reason=why, outcome=f"{why}: {_tail(logfile)}",
                           results=rel if out.is_dir() else None, report=None)
        report = out / "report.html"
        return replace(
            cell, verdict=run.verdict, attempts=attempt, seconds=seconds,
            reason=run.reason or run.error, outcome=run.outcome,
            checks=tuple(CellCheck(c.ok, c.message) for c in run.checks),
            figures=figures(run), results=rel,
            report=os.path.relpath(report, self.directory) if report.is_file() else None)

    def stop_all(self) -> None:
        """Stop every running child (SIGTERM, then SIGKILL after the grace)."""
        self.stopping.set()
        with self._lock:
            live = list(self._live)
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _only_run(results: Results | None) -> Run | None:
    if results is None or not results.runs:
        return None
    run = results.runs[-1]
    # An interrupted child records its run as an error named so; not a result.
    return None if run.error == "interrupted" else run


def _tail(logfile: Path) -> str:
    try:
        lines = logfile.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-LOG_TAIL:] if line.strip())[-1500:]


class MatrixProgress:
    """What :func:`run_matrix` tells its caller; every method may be overridden."""

    def building(self, line: str) -> None:
        """Kernels and images are being built."""

    def planned(self, total: int, done: int) -> None:
        """``total`` cells in this run, ``done`` of them already finished (resume)."""

    def started(self, cell: Cell) -> None:
        """A cell's first attempt is starting."""

    def finished(self, cell: Cell) -> None:
        """A cell ended (its record is written)."""


def plan_run(plan: Plan, directory: Path, shard: tuple[int, int],
             kernels: Mapping[str, Kernel]) -> MatrixRun:
    cells = shard_cells(plan.cells, *shard)
    return MatrixRun(
        version=VERSION, name=plan.spec.name, matrix_file=str(plan.path.resolve()),
        shard=f"{shard[0]}/{shard[1]}", started=_now(), cells=cells,
        kernels={k: v.id for k, v in kernels.items()}, qemu=qemu_version(),
        cxlrig=__version__, retries=plan.spec.retries, timeout=plan.spec.timeout)


def run_matrix(plan: Plan, directory: Path, *, jobs: int, shard: tuple[int, int] = (1, 1),
               resume: bool = False, progress: MatrixProgress | None = None) -> MatrixRun:
    """Run (or finish) the plan's cells of ``shard`` in ``directory``; the run as recorded.

    With ``resume``, ``directory`` must hold a run of the same matrix and
    shard; its finished cells are kept as they are.
    """
    progress = progress or MatrixProgress()
    if resume:
        record = load_run(directory)
        wanted = f"{shard[0]}/{shard[1]}"
        if record.shard != wanted and shard != (1, 1):
            raise MatrixRunError(f"{directory}: holds shard {record.shard}, not {wanted}")
        planned = {c.key for c in shard_cells(plan.cells, *_parse(record.shard))}
        if planned != {c.key for c in record.cells}:
            raise MatrixRunError(f"{directory}: its cells are not the matrix's any more "
                                 f"({plan.path} changed since the run started)")
        shard = _parse(record.shard)
    elif (directory / "matrix.json").exists():
        raise MatrixRunError(f"{directory} already holds a matrix run: --resume it, or "
                             "choose another --out")
    directory.mkdir(parents=True, exist_ok=True)
    base = plan.path.parent
    kernels = build_kernels(plan.variants, base, progress.building,
                            selftests=any(s.kselftests for s in plan.scenarios.values()))
    build_shared(plan, progress.building)
    if resume:
        record = replace(record, kernels={k: v.id for k, v in kernels.items()}, finished=None)
    else:
        record = plan_run(plan, directory, shard, kernels)
    write_run(directory, record)
    todo = [c for c in record.cells if not c.done]
    progress.planned(len(record.cells), len(record.cells) - len(todo))
    runner = CellRunner(directory, kernels, plan, retries=plan.spec.retries,
                        timeout=plan.spec.timeout)
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="cell")
    pending: dict[Future[Cell], Cell] = {}
    try:
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < max(1, jobs):
                cell = queue.pop(0)
                progress.started(cell)
                pending[pool.submit(runner.run, cell)] = cell
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                pending.pop(fut)
                progress.finished(fut.result())
    except BaseException:
        runner.stop_all()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    final = replace(load_run(directory), finished=_now())
    write_run(directory, replace(final, cells=record.cells))
    return load_run(directory)


def _parse(shard: str) -> tuple[int, int]:
    from cxlrig.matrix.model import parse_shard

    return parse_shard(shard)
