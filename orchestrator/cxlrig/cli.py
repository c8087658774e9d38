"""The ``cxlrig`` command: a thin shell over the library.

Exit codes: 0 everything held, 1 a check failed (invalid file, mismatch),
2 the run could not complete, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.tree import Tree

from cxlrig import __version__
from cxlrig.errors import CxlrigError
from cxlrig.paths import cache_dir, runs_dir

if TYPE_CHECKING:  # the CLI imports each room only when a command needs it
    from cxlrig.images import GuestImage
    from cxlrig.images.variants import Variant
    from cxlrig.matrix.model import Plan
    from cxlrig.matrix.publish import Published
    from cxlrig.results import Run
    from cxlrig.scenario.model import ScenarioSpec
    from cxlrig.topology.model import Topology

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Interrupted(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so every ``finally`` stops its QEMU."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted()


# -- commands -------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from cxlrig.topology import TopologyError, load

    bad = 0
    for f in args.files:
        try:
            load(f)
        except TopologyError as exc:
            bad += 1
            for p in exc.problems:
                out.print(str(p), markup=False)
        else:
            if not args.quiet:
                out.print(f"{f}: ok", markup=False)
    return 1 if bad else 0


def cmd_qemu_args(args: argparse.Namespace) -> int:
    from cxlrig.qemu.args import QemuOptions, build_argv, format_argv
    from cxlrig.topology import load

    topo = load(args.file)
    accel = "tcg" if args.accel == "auto" else args.accel
    sys.stdout.write(format_argv(build_argv(topo, QemuOptions(accel=accel,
                                                              cdat_dir=_cdat_files(topo)))))
    return 0


def _cdat_files(topo: Topology) -> Path | None:
    """The devices' CDAT files for a printed command line: in the cache, by content."""
    import hashlib

    from cxlrig.qemu.firmware import cdat_tables

    tables = cdat_tables(topo)
    if not tables:
        return None
    digest = hashlib.sha256(repr(sorted(tables.items())).encode()).hexdigest()[:16]
    path = cache_dir() / "cdat" / digest
    path.mkdir(parents=True, exist_ok=True)
    for device, table in tables.items():
        (path / f"{device}.cdat").write_bytes(table)
    return path


def cmd_check(args: argparse.Namespace) -> int:
    from cxlrig.machine.check import check_topology, tree_lines
    from cxlrig.machine.runner import RunDir
    from cxlrig.topology import load

    status = 0
    for f in args.files:
        topo = load(f)
        run = RunDir.create(runs_dir(), f"check-{topo.name}")
        start = time.monotonic()
        try:
            report = check_topology(topo, run)
        except CxlrigError as exc:
            err.print(f"{f}: could not check: {exc}\n  run dir: {run.path}", markup=False)
            status = max(status, 2)
            continue
        took = time.monotonic() - start
        if not args.quiet:
            _print_tree(f"{topo.name} ({f})", tree_lines(topo, report.found))
        for msg in report.mismatches:
            err.print(f"{f}: mismatch: {msg}", markup=False)
        verdict = "matches" if report.ok else f"{len(report.mismatches)} mismatch(es)"
        out.print(f"{f}: machine {verdict} the topology ({took:.2f} s; run dir {run.path})",
                  markup=False)
        if not report.ok:
            status = max(status, 1)
    return status


def _print_tree(title: str, rows: list[tuple[int, str]]) -> None:
    root = Tree(title)
    stack: list[Tree] = [root]
    for depth, text in rows:
        del stack[depth + 1:]
        node = stack[-1].add(text)
        stack.append(node)
    out.print(root)


def cmd_machine(args: argparse.Namespace) -> int:
    from cxlrig.machine.runner import Machine, RunDir
    from cxlrig.qemu.args import QemuOptions
    from cxlrig.topology import load

    topo = load(args.file)
    run = RunDir.create(runs_dir(), f"machine-{topo.name}")
    opts = QemuOptions(accel="tcg", paused=args.paused)
    with Machine(topo, opts, run) as mach:
        out.print(f"QEMU running (pid {mach.pid}); run dir {run.path}; Ctrl-C stops it",
                  markup=False)
        deadline = time.monotonic() + args.timeout if args.timeout else None
        while mach.is_running():
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return 0


def _progress(status: object) -> Callable[[str], None]:
    def update(line: str) -> None:
        status.update(f"[bold]{line}")  # type: ignore[attr-defined]
    return update


def _variant(args: argparse.Namespace) -> str | Variant:
    """--series PATH (a user's series) or --variant NAME (a shipped one)."""
    from cxlrig.images.variants import load_series

    return load_series(args.series) if args.series is not None else str(args.variant)


def cmd_kernel_build(args: argparse.Namespace) -> int:
    from cxlrig.images.kernel import build_kernel

    start = time.monotonic()
    variant = _variant(args)
    name = variant if isinstance(variant, str) else variant.name
    with err.status(f"building kernel {name}...") as status:
        path = build_kernel(variant, tree=args.tree, jobs=args.jobs,
                            progress=_progress(status), force=args.force)
    err.print(f"kernel {name}: {path} ({time.monotonic() - start:.1f} s)", markup=False)
    out.print(str(path), markup=False)
    return 0


def cmd_kernel_path(args: argparse.Namespace) -> int:
    from cxlrig.images.kernel import kernel_path

    variant = _variant(args)
    path = kernel_path(variant)
    if path is None:
        how = f"--series {args.series}" if args.series else f"--variant {args.variant}"
        err.print(f"kernel {args.series or args.variant} is not built yet: "
                  f"run 'cxlrig kernel build {how}'", markup=False)
        return 1
    out.print(str(path), markup=False)
    return 0


def cmd_kernel_checkpatch(args: argparse.Namespace) -> int:
    from cxlrig.images.kernel import checkpatch

    variant = _variant(args)
    with err.status("checkpatch...") as status:
        results = checkpatch(variant, tree=args.tree, progress=_progress(status))
    for r in results:
        if args.verbose or r.errors or r.warnings or r.checks:
            out.print(r.output.rstrip(), markup=False)
        err.print(f"{r.patch.name}: {r.errors} errors, {r.warnings} warnings, "
                  f"{r.checks} checks", markup=False)
    return 1 if any(r.errors for r in results) else 0


def cmd_guest_build(args: argparse.Namespace) -> int:
    from cxlrig.images.initramfs import build_initramfs

    start = time.monotonic()
    path = build_initramfs(force=args.force)
    err.print(f"initramfs: {path} ({time.monotonic() - start:.1f} s)", markup=False)
    out.print(str(path), markup=False)
    return 0


def _image(variant: str | Variant, kernel: str | None, append: str = "",
           add: Sequence[str] = (), selftests: bool = False,
           tree: Path | None = None) -> GuestImage:
    """The guest image (with the files of --add), with a spinner while a kernel builds."""
    from cxlrig.images import guest_image
    from cxlrig.images.overlay import GuestFile

    files = [GuestFile.parse(a) for a in add]
    name = variant if isinstance(variant, str) else variant.name
    with err.status(f"kernel {name}...") as status:
        return guest_image(variant, kernel, append, progress=_progress(status), add=files,
                           selftests=selftests, tree=tree)


def cmd_boot(args: argparse.Namespace) -> int:
    from cxlrig.guest.boot import booted
    from cxlrig.machine.accel import resolve_accel
    from cxlrig.machine.runner import RunDir
    from cxlrig.topology import load

    topo = load(args.file)
    image = _image(_variant(args), args.kernel, args.append, args.add or (), tree=args.tree)
    choice = resolve_accel(args.accel or topo.accel, image.kernel)
    run = RunDir.create(runs_dir(), f"boot-{topo.name}")
    err.print(f"booting {topo.name} ({choice.accel}: {choice.reason}); run dir {run.path}",
              markup=False)
    session = None
    if args.plugin or args.plugin_sample is not None or args.plugin_delay:
        from cxlrig.scenario.model import PluginSpec
        from cxlrig.scenario.plugin import PluginSession

        if choice.accel != "tcg":
            raise CxlrigError("--plugin needs TCG (--accel tcg)")
        session = PluginSession(PluginSpec(sample=args.plugin_sample or 1,
                                           delay=args.plugin_delay), topo, run.path)
    with booted(topo, image, run, accel=choice.accel, plugin=session.plugin if session else None,
                before_start=session.before_start if session else None) as guest:
        if session:
            session.attach(guest)
        for r in guest.regions:
            err.print(f"  {r.id}: {r.name} {r.size >> 20} MiB, {r.ways}-way at "
                      f"{r.granularity}, node {r.node}", markup=False)
        err.print(f"ready in {guest.boot_seconds:.1f} s (+{guest.bring_up_seconds:.1f} s CXL "
                  "bring-up)", markup=False)
        status = 0
        if args.exec is None:
            err.print("guest shell: Ctrl-] or 'poweroff -f' leaves", markup=False)
            guest.session.interact()
        else:
            res = guest.session.run(args.exec, user="user" if args.user else "root")
            if session:
                session.control_snapshot("exec")
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            sys.stdout.flush()
            status = res.status
    if session:
        session.summary()
        err.print(f"plugin data: {run.path / 'plugin.json'} ('cxlrig report {run.path}')",
                  markup=False)
    return status


def cmd_run(args: argparse.Namespace) -> int:
    from cxlrig.images.variants import load_series
    from cxlrig.scenario.model import ScenarioError, load_scenario
    from cxlrig.scenario.plugin import PluginSession
    from cxlrig.scenario.runner import SuiteProgress, run_suite

    specs = []
    bad = False
    for f in args.scenarios:
        try:
            specs.append(load_scenario(f)[0])
        except ScenarioError as exc:
            bad = True
            for p in exc.problems:
                out.print(str(p), markup=False)
    if bad:
        return 1
    results_dir = Path(args.results) if args.results else \
        runs_dir() / time.strftime("%Y%m%d-%H%M%S-results")

    class Progress(SuiteProgress):
        def __init__(self, status: Status) -> None:
            self.status = status

        def building(self, line: str) -> None:
            self.status.update(f"[bold]{line}")

        def started(self, spec: ScenarioSpec, variant: str) -> None:
            self.status.update(f"[bold]{spec.name} on {variant}...")

        def finished(self, run: Run) -> None:
            _print_run(run)

    selftests = any(s.kselftests for s in specs)
    with err.status("starting...") as status:
        progress = Progress(status)
        series = [load_series(s) for s in args.series or []]
        results = run_suite(specs, results_dir, variants=args.variant, topology=args.topology,
                            image_for=lambda v: _image(v, args.kernel, add=args.add or (),
                                                       selftests=selftests, tree=args.tree),
                            series=series,
                            hooks_factory=PluginSession.for_scenario, progress=progress)
    _report(results_dir)
    return results.exit_code


_VERDICT_COLOUR = {"pass": "green", "fail": "red", "skip": "dim", "unjudged": "blue"}


def _print_run(run: Run) -> None:
    colour = _VERDICT_COLOUR.get(run.verdict.value, "yellow")
    took = f" ({run.seconds:.1f} s)" if run.seconds is not None else ""
    out.print(f"[{colour}]{run.verdict.value.upper():5s}[/] {run.scenario} on {run.variant}"
              f"{took}")
    for c in run.failed_checks:
        out.print(f"      {c.message}", markup=False)
    if run.error:
        out.print(f"      could not complete: {run.error.splitlines()[0]}", markup=False)
        if run.traceback and run.run_dir:
            out.print(f"      traceback: {run.run_dir}/{run.traceback}", markup=False)
    if run.reason:
        out.print(f"      {run.reason}", markup=False)


def _report(results_dir: Path) -> None:
    import cxlrig.report.terminal as terminal
    from cxlrig.report import write_reports

    files = write_reports(results_dir)
    out.print(terminal.verdict_table(files.results))
    out.print(f"report: {files.html}", markup=False)


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render a results directory, or summarise a run's plugin data."""
    target = Path(args.dir)
    if (target / "results.json").exists():
        _report(target)
        return 0
    plugin_file = target / "plugin.json" if target.is_dir() else target
    if not plugin_file.exists():
        raise CxlrigError(f"{target}: neither results.json nor plugin.json there")
    from cxlrig.plugin import load_results
    from cxlrig.plugin.tables import plugin_tables

    for table in plugin_tables(load_results(plugin_file), args.top):
        out.print(table)
    return 0


def _load_plan(path: str) -> Plan:
    from cxlrig.matrix.model import MatrixError, load_matrix

    try:
        return load_matrix(path)
    except MatrixError as exc:
        for p in exc.problems:
            out.print(str(p), markup=False)
        raise _Reported(1) from None


class _Reported(Exception):
    """The problems are printed; exit with this status."""

    def __init__(self, status: int) -> None:
        self.status = status


_CELL_COLOUR = {"pass": "green", "fail": "red", "skip": "dim", "error": "yellow",
                "unjudged": "blue"}


def cmd_matrix_list(args: argparse.Namespace) -> int:
    from cxlrig.matrix.model import shard_cells

    plan = _load_plan(args.matrix)
    cells = shard_cells(plan.cells, *args.shard)
    runnable = 0
    for c in cells:
        lacks = plan.scenarios[c.scenario].unmet(plan.topologies[c.topology])
        runnable += not lacks
        note = f"  (skip: {'; '.join(lacks)})" if lacks else ""
        out.print(f"{c.key}{note}", markup=False)
    err.print(f"{len(cells)} cells, {runnable} to run, {len(cells) - runnable} skips "
              f"(shard {args.shard[0]}/{args.shard[1]} of {len(plan.cells)})", markup=False)
    return 0


def cmd_matrix_run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from cxlrig.matrix.publish import publish
    from cxlrig.matrix.record import Cell
    from cxlrig.matrix.runner import MatrixProgress, run_matrix

    plan = _load_plan(args.matrix)
    if args.resume is not None:
        directory = Path(args.resume)
    elif args.out is not None:
        directory = Path(args.out)
    else:
        directory = runs_dir() / time.strftime(f"matrix-{plan.spec.name}-%Y%m%d-%H%M%S")

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=err, transient=False)

    class Shown(MatrixProgress):
        def __init__(self) -> None:
            self.task = bar.add_task("building", total=None)

        def building(self, line: str) -> None:
            bar.update(self.task, description=line[:70])

        def planned(self, total: int, done: int) -> None:
            bar.update(self.task, description=f"{plan.spec.name} cells", total=total,
                       completed=done)

        def finished(self, cell: Cell) -> None:
            bar.advance(self.task)
            verdict = cell.verdict.value if cell.verdict else "?"
            colour = _CELL_COLOUR.get(verdict, "yellow")
            flaky = " [yellow](flaky)[/]" if cell.flaky else ""
            took = f" {cell.seconds:.0f} s" if cell.seconds is not None else ""
            line = f"[{colour}]{verdict.upper():5s}[/] {cell.key}{took}{flaky}"
            if cell.verdict is not None and cell.verdict.value in ("fail", "error"):
                line += f"\n      {escape(cell.outcome[:300])}"
            bar.console.print(line)

    with bar:
        run_matrix(plan, directory, jobs=args.jobs, shard=args.shard,
                         resume=args.resume is not None, progress=Shown())
    return _published(directory, publish(directory, remember=not args.no_history))


def _published(directory: Path, pub: Published) -> int:
    from cxlrig.results import Verdict

    run = pub.run
    counts = ", ".join(f"{run.count(v)} {v.value}" for v in Verdict)
    flaky = sum(c.flaky for c in run.cells)
    out.print(f"{run.name} {run.shard}: {len(run.cells)} cells: {counts}, {flaky} flaky",
              markup=False)
    if pub.previous is not None:
        out.print(f"compared with {pub.previous.directory}:", markup=False)
        for c in pub.changes:
            out.print(f"  {'REGRESSION ' if c.regression else ''}{c.message}", markup=False)
        if not pub.changes:
            out.print("  nothing changed", markup=False)
    out.print(f"dashboard: {pub.dashboard}\njunit: {pub.junit}\nkcidb: {pub.kcidb}",
              markup=False)
    return max(run.exit_code, 1 if pub.regressions else 0)


def cmd_matrix_merge(args: argparse.Namespace) -> int:
    from cxlrig.matrix.publish import merge, publish

    target = Path(args.out)
    merge([Path(d) for d in args.dirs], target)
    return _published(target, publish(target, remember=not args.no_history))


def cmd_matrix_publish(args: argparse.Namespace) -> int:
    from cxlrig.matrix.publish import publish

    target = Path(args.dir)
    return _published(target, publish(target, remember=not args.no_history))


def cmd_matrix_compare(args: argparse.Namespace) -> int:
    from cxlrig.matrix import history

    new = history.find_run(args.runs[-1])
    if len(args.runs) == 2:
        old = history.find_run(args.runs[0])
    else:
        found = history.previous(new.id)
        if found is None:
            err.print(f"{new.directory}: the first recorded run of {new.matrix}; nothing to "
                      "compare with", markup=False)
            return 0
        old = found
    changes = history.compare(old.id, new.id)
    out.print(f"{old.directory} -> {new.directory}", markup=False)
    for c in changes:
        out.print(f"  {'REGRESSION ' if c.regression else ''}{c.message}", markup=False)
    if not changes:
        out.print("  nothing changed", markup=False)
    return 1 if any(c.regression for c in changes) else 0


def cmd_matrix_history(args: argparse.Namespace) -> int:
    from cxlrig.matrix import history

    for r in history.runs(args.matrix):
        out.print(f"{r.id:5d}  {r.started}  {r.matrix:20s} {r.shard:6s} {r.directory}",
                  markup=False)
    return 0


def cmd_matrix_export(args: argparse.Namespace) -> int:
    from cxlrig.matrix import export

    if args.kcidb:
        from cxlrig.matrix.record import load_run

        text = json.dumps(export.kcidb(load_run(args.source)), indent=1) + "\n"
    else:
        _load_plan(args.source)  # the workflow names the file: it must be a good one
        shards = args.shards
        text = (export.github_actions(args.source, shards) if args.github_actions
                else export.gitlab(args.source, shards))
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        from cxlrig.files import write_atomic

        write_atomic(Path(args.output), text.encode())
        err.print(f"wrote {args.output}", markup=False)
    return 0


def shard_arg(text: str) -> tuple[int, int]:
    from cxlrig.matrix.model import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_doctor(args: argparse.Namespace) -> int:
    from cxlrig.doctor import prerequisites

    rows = prerequisites()
    failed = [r for r in rows if r.required and not r.ok]
    if not args.quiet or failed:
        table = Table(title="cxlrig doctor")
        table.add_column("prerequisite")
        table.add_column("ok")
        table.add_column("detail", overflow="fold")
        for r in rows:
            table.add_row(r.what, "[green]yes[/]" if r.ok else "[red]NO[/]", r.detail)
        (err if failed else out).print(table)
    return 1 if failed else 0


# -- parser ---------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (benchmarks use it too)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


SERIES_HELP = ("a patch series on the shipped sources: a directory of *.patch/*.mbox "
               "(variant.yaml says how to judge it) or one mbox file")


TREE_HELP = ("build this kernel source tree (yours is never written): with --series, the "
             "series applied to a copy of it; with --variant, as it is with that variant's "
             "config fragments")


ADD_HELP = ("put a host file or directory into the guest (default at /opt/NAME; a "
            "dynamic binary brings its libraries); repeatable")


def build_parser() -> argparse.ArgumentParser:
    from cxlrig.images.kernel import VARIANTS

    p = argparse.ArgumentParser(prog="cxlrig", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"cxlrig {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int],
            help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=fn)
        return sp

    sp = add("validate", cmd_validate, "check topology files; every problem as FILE:LINE:COL")
    sp.add_argument("files", nargs="+", metavar="FILE")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only problems")

    sp = add("qemu-args", cmd_qemu_args, "print the QEMU command for a topology, one option a line")
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="tcg")

    sp = add("check", cmd_check, "start each machine paused and prove its devices over QMP")
    sp.add_argument("files", nargs="+", metavar="FILE")
    sp.add_argument("-q", "--quiet", action="store_true", help="do not print the device tree")

    sp = add("machine", cmd_machine, "run a topology's machine (no guest kernel) until Ctrl-C")
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--paused", action="store_true", help="do not start the CPUs")
    sp.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")

    sp = add("kernel", lambda a: 2, "build or locate the guest kernel")
    ksub = sp.add_subparsers(dest="kernel_command", required=True, metavar="ACTION")
    kb = ksub.add_parser("build", help="build a kernel variant (cached by content hash)")
    kb.set_defaults(func=cmd_kernel_build)
    kb.add_argument("--variant", default="v2", choices=VARIANTS, help="default v2")
    kb.add_argument("--series", metavar="PATH", help=SERIES_HELP)
    kb.add_argument("--tree", type=Path, help=TREE_HELP)
    kb.add_argument("--jobs", type=int, help="parallel jobs (default: all CPUs)")
    kb.add_argument("--force", action="store_true", help="rebuild even if cached")
    kp = ksub.add_parser("path", help="print the cached bzImage of a variant")
    kp.set_defaults(func=cmd_kernel_path)
    kp.add_argument("--variant", default="v2", choices=VARIANTS)
    kp.add_argument("--series", metavar="PATH", help=SERIES_HELP)

    kc = ksub.add_parser("checkpatch", help="the base tree's checkpatch.pl --strict on a "
                         "series; exit 1 on any error")
    kc.set_defaults(func=cmd_kernel_checkpatch)
    kc.add_argument("--variant", default="v2", choices=VARIANTS)
    kc.add_argument("--series", metavar="PATH", help=SERIES_HELP)
    kc.add_argument("--tree", type=Path, help="take checkpatch.pl from this kernel tree")

    sp = add("guest", lambda a: 2, "build the guest initramfs")
    gsub = sp.add_subparsers(dest="guest_command", required=True, metavar="ACTION")
    gb = gsub.add_parser("build", help="build the initramfs (cached by content hash)")
    gb.set_defaults(func=cmd_guest_build)
    gb.add_argument("--force", action="store_true")

    sp = add("boot", cmd_boot, "boot a topology with our kernel, bring up CXL, run or interact")
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--variant", default="v2", choices=VARIANTS,
                    help="kernel variant (default v2)")
    sp.add_argument("--series", metavar="PATH", help=SERIES_HELP)
    sp.add_argument("--kernel", help="boot this bzImage instead of a built variant")
    sp.add_argument("--tree", type=Path, help=TREE_HELP)
    sp.add_argument("--accel", choices=("auto", "kvm", "tcg"),
                    help="accelerator (default: the topology's, auto)")
    sp.add_argument("--exec", metavar="CMD", help="run CMD in the guest; its status is ours")
    sp.add_argument("--user", action="store_true", help="run CMD as the unprivileged user")
    sp.add_argument("--append", default="", help="extra kernel command line")
    sp.add_argument("--add", action="append", metavar="HOST[:GUEST]", help=ADD_HELP)
    sp.add_argument("--plugin", action="store_true",
                    help="count memory accesses with the plugin (TCG); see 'cxlrig report'")
    sp.add_argument("--plugin-sample", type=positive_int, metavar="N",
                    help="with the plugin: count one access in N (implies --plugin)")
    sp.add_argument("--plugin-delay", action="store_true",
                    help="with the plugin: the guest's clock sees each node's modelled extra "
                         "latency (implies --plugin)")

    sp = add("run", cmd_run, "run scenarios on kernel variants; results, JUnit and HTML report")
    sp.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    sp.add_argument("--variant", action="append", choices=VARIANTS,
                    help="only these variants (repeatable; default: each scenario's own)")
    sp.add_argument("--series", action="append", metavar="PATH",
                    help=SERIES_HELP + " (repeatable; with no --variant only the series run)")
    sp.add_argument("--topology", help="run on this topology instead of the scenario's")
    sp.add_argument("--kernel", help="boot this bzImage for every variant")
    sp.add_argument("--tree", type=Path, help=TREE_HELP + " (for every variant)")
    sp.add_argument("--add", action="append", metavar="HOST[:GUEST]", help=ADD_HELP)
    sp.add_argument("--results", help="results directory (default: a new one under runs/)")

    sp = add("report", cmd_report, "re-render a results directory, or show a run's plugin data")
    sp.add_argument("dir", metavar="DIR", help="a results directory or a run directory")
    sp.add_argument("--top", type=int, default=10, help="pages to list per phase")

    sp = add("matrix", lambda a: 2, "topologies x kernels x scenarios: run, compare, export")
    msub = sp.add_subparsers(dest="matrix_command", required=True, metavar="ACTION")
    mp = msub.add_parser("list", help="list a matrix file's cells (and which are skips)")
    mp.set_defaults(func=cmd_matrix_list)
    mp.add_argument("matrix", metavar="MATRIX")
    mp.add_argument("--shard", type=shard_arg, default=(1, 1), metavar="I/N")
    mp = msub.add_parser("run", help="run a matrix's cells in parallel; dashboard, JUnit, "
                         "KCIDB, history")
    mp.set_defaults(func=cmd_matrix_run)
    mp.add_argument("matrix", metavar="MATRIX")
    mp.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1,
                    help="cells at a time (default: the number of CPUs)")
    mp.add_argument("--shard", type=shard_arg, default=(1, 1), metavar="I/N",
                    help="run only shard I of N (every N-th cell)")
    mp.add_argument("--out", help="the run's directory (default: a new one under runs/)")
    mp.add_argument("--resume", metavar="DIR",
                    help="finish the run in DIR: only cells that did not finish run again")
    mp.add_argument("--no-history", action="store_true", help="do not record the run")
    mp = msub.add_parser("merge", help="merge shard directories into one run")
    mp.set_defaults(func=cmd_matrix_merge)
    mp.add_argument("dirs", nargs="+", metavar="DIR")
    mp.add_argument("--out", required=True, help="the merged run's (new) directory")
    mp.add_argument("--no-history", action="store_true", help="do not record the run")
    mp = msub.add_parser("publish", help="(re)write a run's dashboard, JUnit and KCIDB and "
                         "record it in the history")
    mp.set_defaults(func=cmd_matrix_publish)
    mp.add_argument("dir", metavar="DIR")
    mp.add_argument("--no-history", action="store_true", help="do not record the run")
    mp = msub.add_parser("compare", help="what changed between two recorded runs "
                         "(exit 1 on a regression)")
    mp.set_defaults(func=cmd_matrix_compare)
    mp.add_argument("runs", nargs="+", metavar="RUN",
                    help="[OLD] NEW: run directories or history ids (OLD: the run before NEW)")
    mp = msub.add_parser("history", help="list recorded matrix runs")
    mp.set_defaults(func=cmd_matrix_history)
    mp.add_argument("matrix", nargs="?", help="only this matrix's runs")
    mp = msub.add_parser("export", help="a CI workflow running a matrix in shards, or a run "
                         "as KCIDB JSON")
    mp.set_defaults(func=cmd_matrix_export)
    kind = mp.add_mutually_exclusive_group(required=True)
    kind.add_argument("--github-actions", action="store_true", help="a GitHub Actions workflow")
    kind.add_argument("--gitlab", action="store_true", help="a .gitlab-ci.yml")
    kind.add_argument("--kcidb", action="store_true", help="a matrix run directory as KCIDB")
    mp.add_argument("source", metavar="MATRIX|DIR",
                    help="the matrix file (workflows) or a run directory (--kcidb)")
    mp.add_argument("--shards", type=positive_int, default=4, help="jobs to spread over")
    mp.add_argument("-o", "--output", help="the file to write (default: standard output)")

    sp = add("doctor", cmd_doctor, "report each prerequisite")
    sp.add_argument("-q", "--quiet", action="store_true",
                    help="print only when something is missing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args))
    except _Reported as exc:
        return exc.status
    except CxlrigError as exc:
        err.print(f"cxlrig {args.command}: {exc}", markup=False)
        return exc.exit_code
    except (KeyboardInterrupt, Interrupted):
        err.print(f"cxlrig {args.command}: interrupted", markup=False)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
