"""The ``cxlrig`` command: a thin shell over the library.

Exit codes: 0 everything held, 1 a check failed (invalid file, mismatch),
2 the run could not complete, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
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
from rich.table import Table
from rich.tree import Tree

from cxlrig import __version__
from cxlrig.errors import CxlrigError
from cxlrig.paths import cache_dir, runs_dir

if TYPE_CHECKING:  # the CLI imports each room only when a command needs it
    from cxlrig.guest.boot import GuestImage

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
    sys.stdout.write(format_argv(build_argv(topo, QemuOptions(accel=accel))))
    return 0


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


def cmd_kernel_build(args: argparse.Namespace) -> int:
    from cxlrig.images.kernel import build_kernel

    start = time.monotonic()
    with err.status(f"building kernel {args.variant}...") as status:
        path = build_kernel(args.variant, tree=args.tree, jobs=args.jobs,
                            progress=_progress(status), force=args.force)
    err.print(f"kernel {args.variant}: {path} ({time.monotonic() - start:.1f} s)", markup=False)
    out.print(str(path), markup=False)
    return 0


def cmd_kernel_path(args: argparse.Namespace) -> int:
    from cxlrig.images.kernel import kernel_path

    path = kernel_path(args.variant)
    if path is None:
        err.print(f"kernel {args.variant} is not built yet: "
                  f"run 'cxlrig kernel build --variant {args.variant}'", markup=False)
        return 1
    out.print(str(path), markup=False)
    return 0


def cmd_guest_build(args: argparse.Namespace) -> int:
    from cxlrig.images.initramfs import build_initramfs

    start = time.monotonic()
    path = build_initramfs(force=args.force)
    err.print(f"initramfs: {path} ({time.monotonic() - start:.1f} s)", markup=False)
    out.print(str(path), markup=False)
    return 0


def guest_image(variant: str, kernel: str | None, append: str = "") -> GuestImage:
    """The kernel (built or given) and initramfs for a boot, building what is missing."""
    from cxlrig.guest.boot import GuestImage
    from cxlrig.images.initramfs import build_initramfs
    from cxlrig.images.kernel import build_kernel

    if kernel is not None:
        path = Path(kernel)
        if not path.is_file():
            raise CxlrigError(f"--kernel {kernel}: no such file")
    else:
        with err.status(f"kernel {variant}...") as status:
            path = build_kernel(variant, progress=_progress(status))
    return GuestImage(path, build_initramfs(), append)


def cmd_boot(args: argparse.Namespace) -> int:
    from cxlrig.guest.boot import booted
    from cxlrig.machine.accel import resolve_accel
    from cxlrig.machine.runner import RunDir
    from cxlrig.topology import load

    topo = load(args.file)
    image = guest_image(args.variant, args.kernel, args.append)
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
    plugin = session.plugin if session else None
    with booted(topo, image, run, accel=choice.accel, plugin=plugin) as guest:
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
    from cxlrig.guest.boot import GuestImage
    from cxlrig.images.initramfs import build_initramfs
    from cxlrig.results import ResultsWriter
    from cxlrig.scenario.model import ScenarioError, load_scenario
    from cxlrig.scenario.runner import run_scenario

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
    writer = ResultsWriter(results_dir)
    initrd = build_initramfs()
    images: dict[str, GuestImage] = {}
    hooks = _plugin_hooks()
    verdicts: list[str] = []
    for spec in specs:
        variants = [v for v in spec.variants if not args.variant or v in args.variant]
        for variant in variants:
            if variant not in images:
                images[variant] = GuestImage(guest_image(variant, args.kernel).kernel, initrd)
            with err.status(f"{spec.name} on {variant}..."):
                res = run_scenario(spec, variant, images[variant], results_dir,
                                   topology=args.topology, hooks_factory=hooks)
            writer.add(res.to_json())
            verdicts.append(res.verdict)
            colour = {"pass": "green", "fail": "red"}.get(res.verdict, "yellow")
            out.print(f"[{colour}]{res.verdict.upper():5s}[/] {spec.name} on {variant} "
                      f"({res.seconds:.1f} s)")
            for c in res.checks:
                if not c.ok:
                    out.print(f"      {c.message}", markup=False)
            if res.error:
                out.print(f"      could not complete: {res.error.splitlines()[0]}",
                          markup=False)
    writer.write()
    _report(results_dir)
    if "error" in verdicts:
        return 2
    return 1 if "fail" in verdicts else 0


def _plugin_hooks() -> Callable[..., object]:
    from cxlrig.scenario.plugin import PluginSession

    return PluginSession.for_scenario


def _report(results_dir: Path) -> None:
    import cxlrig.report.html as html
    import cxlrig.report.junit as junit
    import cxlrig.report.terminal as terminal
    from cxlrig.report import load_results

    results = load_results(results_dir)
    out.print(terminal.verdict_table(results))
    junit.write(results, results_dir / "junit.xml")
    page = html.render(results_dir)
    out.print(f"report: {page}", markup=False)


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

    res = load_results(plugin_file)
    for ph in res.phases:
        table = Table(title=f"phase {ph.name or '(open)'}: {ph.accesses} accesses"
                      + (f", sampled 1/{res.sample}" if res.sampled else ""))
        for col in ("node / device", "reads", "writes", "share", "modelled ms"):
            table.add_column(col, justify="left" if col == "node / device" else "right")
        total = ph.node_accesses or 1
        for node, c in sorted(ph.nodes.items()):
            modelled = f"{c.modelled_ns / 1e6:.2f}" if c.modelled_ns is not None else "-"
            table.add_row(f"node {node}", str(c.reads), str(c.writes),
                          f"{c.total / total:.1%}", modelled)
        for dev, dc in sorted(ph.devices.items()):
            table.add_row(f"  {dev}", str(dc.reads), str(dc.writes),
                          f"{dc.total / total:.1%}", "")
        table.add_row("unmatched", str(ph.unmatched.total), "", "", "")
        out.print(table)
        if ph.pages:
            top = Table(title=f"top {args.top} pages")
            for col in ("pa", "node", "reads", "writes"):
                top.add_column(col, justify="right")
            for pg in ph.top_pages(args.top):
                top.add_row(f"{pg.pa:#x}", str(pg.node), str(pg.reads), str(pg.writes))
            out.print(top)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from cxlrig.machine.accel import kvm_device_usable
    from cxlrig.qemu.probe import probe

    caps = probe()
    header = cache_dir() / "qemu-src" / "include" / "qemu" / "qemu-plugin.h"
    rows: list[tuple[str, bool, str, bool]] = []  # what, ok, detail, required
    ver = ".".join(map(str, caps.version)) if caps.version else "not installed"
    rows.append(("QEMU 10 or newer", bool(caps.version and caps.version >= (10, 0, 0)),
                 caps.version_text or ver, True))
    missing = caps.missing_cxl_devices
    rows.append(("QEMU CXL devices", not missing,
                 "all present" if not missing else "missing: " + ", ".join(missing), True))
    rows.append(("QEMU TCG plugins", caps.plugins,
                 "enabled" if caps.plugins else "-plugin not supported", True))
    rows.append(("QEMU plugin header", header.exists(), str(header), True))
    src = Path("/usr/src/linux-source-6.12.tar.xz")
    rows.append(("Linux 6.12 source", src.exists(), str(src), True))
    for tool in ("busybox", "cxl", "daxctl", "numactl"):
        path = _which(tool)
        rows.append((f"guest tool {tool}", path is not None, path or "not installed", True))
    kvm_detail = "usable device; `auto` still proves KVM by booting the guest kernel" \
        if kvm_device_usable() else "no usable /dev/kvm: TCG"
    probes = sorted((cache_dir() / "kvm-probe").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if probes:
        import json

        last = json.loads(probes[-1].read_text())
        kvm_detail = ("proven: " if last["ok"] else "refused: ") + str(last["detail"])
    rows.append(("KVM", True, kvm_detail, False))
    rows.append(("cache", True, f"{cache_dir()} ({_du(cache_dir())})", False))
    failed = [r for r in rows if r[3] and not r[1]]
    if not args.quiet or failed:
        table = Table(title="cxlrig doctor")
        table.add_column("prerequisite")
        table.add_column("ok")
        table.add_column("detail", overflow="fold")
        for what, ok, detail, _ in rows:
            table.add_row(what, "[green]yes[/]" if ok else "[red]NO[/]", detail)
        (err if failed else out).print(table)
    return 1 if failed else 0


def _which(tool: str) -> str | None:
    import shutil

    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/bin:/usr/bin")


def _du(path: Path) -> str:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return f"{total / (1 << 20):.0f} MiB"


# -- parser ---------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
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
    kb.add_argument("--variant", default="v2", help="v1, v2 or debug (default v2)")
    kb.add_argument("--tree", type=Path, help="build this kernel tree with our config fragment")
    kb.add_argument("--jobs", type=int, help="parallel jobs (default: all CPUs)")
    kb.add_argument("--force", action="store_true", help="rebuild even if cached")
    kp = ksub.add_parser("path", help="print the cached bzImage of a variant")
    kp.set_defaults(func=cmd_kernel_path)
    kp.add_argument("--variant", default="v2")

    sp = add("guest", lambda a: 2, "build the guest initramfs")
    gsub = sp.add_subparsers(dest="guest_command", required=True, metavar="ACTION")
    gb = gsub.add_parser("build", help="build the initramfs (cached by content hash)")
    gb.set_defaults(func=cmd_guest_build)
    gb.add_argument("--force", action="store_true")

    sp = add("boot", cmd_boot, "boot a topology with our kernel, bring up CXL, run or interact")
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--variant", default="v2", help="kernel variant: v1, v2 or debug")
    sp.add_argument("--kernel", help="boot this bzImage instead of a built variant")
    sp.add_argument("--accel", choices=("auto", "kvm", "tcg"),
                    help="accelerator (default: the topology's, auto)")
    sp.add_argument("--exec", metavar="CMD", help="run CMD in the guest; its status is ours")
    sp.add_argument("--user", action="store_true", help="run CMD as the unprivileged user")
    sp.add_argument("--append", default="", help="extra kernel command line")
    sp.add_argument("--plugin", action="store_true",
                    help="count memory accesses with the plugin (TCG); see 'cxlrig report'")
    sp.add_argument("--plugin-sample", type=_positive_int, metavar="N",
                    help="with the plugin: count one access in N (implies --plugin)")
    sp.add_argument("--plugin-delay", action="store_true",
                    help="with the plugin: the guest's clock sees each node's modelled extra "
                         "latency (implies --plugin)")

    sp = add("run", cmd_run, "run scenarios on kernel variants; results, JUnit and HTML report")
    sp.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    sp.add_argument("--variant", action="append", choices=("v1", "v2", "debug"),
                    help="only these variants (repeatable; default: each scenario's own)")
    sp.add_argument("--topology", help="run on this topology instead of the scenario's")
    sp.add_argument("--kernel", help="boot this bzImage for every variant")
    sp.add_argument("--results", help="results directory (default: a new one under runs/)")

    sp = add("report", cmd_report, "re-render a results directory, or show a run's plugin data")
    sp.add_argument("dir", metavar="DIR", help="a results directory or a run directory")
    sp.add_argument("--top", type=int, default=10, help="pages to list per phase")

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
