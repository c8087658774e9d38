"""Run a scenario on one kernel variant: boot, steps, expectations, results.

Verdicts: ``pass`` when every expectation for the variant held, ``fail``
when one did not (the check says which step, field, expected and actual),
``error`` when the run could not complete (boot failure, a ``check: true``
step failed, a template named a value that does not exist, ...).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from cxlrig.errors import CxlrigError
from cxlrig.guest.boot import Guest, GuestImage, booted
from cxlrig.guest.session import ConsoleWatcher
from cxlrig.images.overlay import GuestFile, with_files
from cxlrig.images.selftests import GUEST_DIR, Selftests, load_selftests
from cxlrig.images.variants import Variant
from cxlrig.machine.runner import Machine, RunDir
from cxlrig.paths import DATA_ROOT
from cxlrig.qemu.args import Plugin
from cxlrig.qemu.mtree import MemoryLayout
from cxlrig.results import (
    Check,
    Measurement,
    PluginData,
    Results,
    ResultsWriter,
    Run,
    Step,
    Verdict,
    load_results,
)
from cxlrig.scenario.faults import fault_checks, run_dcd, run_inject
from cxlrig.scenario.hotplug import run_hotplug
from cxlrig.scenario.model import ExpectSpec, MeasureSpec, ScenarioSpec, StepSpec
from cxlrig.scenario.tap import parse as tap_parse
from cxlrig.timeouts import TIMEOUTS
from cxlrig.topology import Topology, load

log = logging.getLogger(__name__)

_TEMPLATE = re.compile(r"\$\{([^}]+)\}")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_STEP_REF = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)(.*)$")
#: A step's stdout and stderr keep this many characters in results.json.
STDOUT_KEEP = 4096
#: In a run directory: the traceback of whatever ended a run as ``error``.
TRACEBACK_FILE = "traceback.txt"


class ScenarioRunError(CxlrigError):
    """The scenario could not run to the end."""


class StepFailed(ScenarioRunError):
    """A step raised: whatever it was, the run ends as ``error`` naming the step."""

    def __init__(self, step: str, cause: BaseException) -> None:
        what = str(cause) if isinstance(cause, CxlrigError) else \
            f"{type(cause).__name__}: {cause}"
        super().__init__(f"step '{step}': {what}")
        self.step = step


def lookup(data: Any, path: str) -> Any:
    """``first_call.status[0]`` inside nested dicts and lists; KeyError if absent."""
    cur = data
    for name, index in _PATH_PART.findall(path):
        if index:
            if not isinstance(cur, list) or int(index) >= len(cur):
                raise KeyError(path)
            cur = cur[int(index)]
        else:
            if not isinstance(cur, dict) or name not in cur:
                raise KeyError(path)
            cur = cur[name]
    return cur


class Context:
    """Values a step or expectation may name as ``${...}``."""

    def __init__(self, topo: Topology, variant: str, on_dram_node: bool = True) -> None:
        self.on_dram_node = on_dram_node
        #: The machine as booted: fault steps name its devices.
        self.topology = topo
        ram = [r for r in topo.booted_regions if r.type == "ram"]
        self.vars: dict[str, Any] = {
            "variant": variant,
            "topology": topo.name,
            "dram_node": 0,
            "cxl_node": ram[0].node if ram else -1,
            "cxl_nodes": ",".join(str(n) for n in sorted({r.node for r in ram})),
            # Counts a bring-up check compares the guest with.
            "devices": sum(1 for d in topo.devices if d.present),
            "regions": len(topo.booted_regions),
            "dram_nodes": len(topo.nodes),
            "nodes": len(topo.nodes) + sum(1 for r in ram if r.online != "devdax"),
        }
        dc = [d for d in topo.devices if d.dc_size]
        if dc:
            self.vars["dc_device"] = dc[0].id
        if ram:
            # A device of the CXL node, for scenarios that travel between
            # topologies: fault steps aim at it (``${memdev_ID}`` and
            # ``${cxl_memdev}`` name it to the guest once it has booted).
            dev = topo.device(ram[0].devices[0])
            self.vars["cxl_device"] = dev.id
            self.vars["cxl_device_bytes"] = dev.volatile + dev.persistent + dev.dc_size
        #: With CPUs on several nodes: the CPUs a command must run on for its
        #: first-touch pages to land on ${dram_node} (None: any CPU will do).
        with_cpus = [n for n in topo.nodes if n.cpus]
        self.dram_cpus: str | None = ",".join(str(c) for c in topo.nodes[0].cpus) \
            if len(with_cpus) > 1 and topo.nodes[0].cpus else None
        self.steps: dict[str, Step] = {}
        #: Devices plugged in by hotplug steps: how often each was.
        self.plugs: dict[str, int] = {}
        #: The kernel's selftests, when the scenario runs any (None: none built).
        self.selftests: Selftests | None = None

    def value(self, name: str) -> Any:
        name = name.strip()
        if name in self.vars:
            return self.vars[name]
        m = _STEP_REF.match(name)
        step = self.steps.get(m.group(1)) if m else None
        if m is None or step is None:
            raise ScenarioRunError(f"${{{name}}}: no variable or earlier step by that name")
        head, path = m.group(1), m.group(2).lstrip(".")
        if path in ("status", "stdout", "stderr"):
            return getattr(step, path)
        try:
            return lookup(step.data, path)
        except KeyError:
            raise ScenarioRunError(f"${{{name}}}: step '{head}' has no field '{path}' "
                                   f"(its data: {json.dumps(step.data)[:300]})") from None

    def expand(self, text: str) -> str:
        return _TEMPLATE.sub(lambda m: str(self.value(m.group(1))), text)

    def resolve(self, value: Any) -> Any:
        """Like expand, but ``"${x}"`` alone keeps x's type (a number stays one)."""
        if isinstance(value, str):
            whole = _TEMPLATE.fullmatch(value.strip())
            if whole:
                return self.value(whole.group(1))
            return self.expand(value)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value


def expand_steps(steps: list[StepSpec], variant: str) -> list[tuple[StepSpec, dict[str, Any]]]:
    """Steps for ``variant``, with foreach loops unrolled into (step, vars)."""
    out: list[tuple[StepSpec, dict[str, Any]]] = []
    for st in steps:
        if st.variants is not None and variant not in st.variants:
            continue
        if st.foreach:
            (var, values), = st.foreach.items()
            out += [(st, {var: v}) for v in values]
        else:
            out.append((st, {}))
    return out


def check(ex: ExpectSpec, ctx: Context) -> Check:
    step = ctx.steps.get(ex.step)
    expected = ctx.resolve(ex.expected)
    ex = ex.model_copy(update={"field": ctx.expand(ex.field)})

    def result(actual: Any, ok: bool, message: str) -> Check:
        return Check(ok=ok, message=message, step=ex.step, field=ex.field, op=ex.op,
                     expected=expected, actual=actual)

    if step is None:
        return result(None, False, f"step '{ex.step}' did not run")
    try:
        actual = (getattr(step, ex.field) if ex.field in ("status", "stdout", "stderr")
                  else lookup(step.data, ex.field))
    except KeyError:
        return result(None, False, f"{ex.step}: no field '{ex.field}' in the step's output")
    ok = _compare(ex.op, actual, expected)
    show = {"equals": "==", "not_equals": "!=", "one_of": "in", "contains": "contains",
            "not_contains": "does not contain",
            "greater": ">", "less": "<"}[ex.op]
    why = f" ({ex.why})" if ex.why else ""
    if ok:
        msg = f"{ex.step}: {ex.field} {show} {expected!r}{why}"
    else:
        msg = f"{ex.step}: {ex.field} is {actual!r}, expected {show} {expected!r}{why}"
    return result(actual, ok, msg)


def _compare(op: str, actual: Any, expected: Any) -> bool:
    try:
        if op == "equals":
            return bool(actual == expected)
        if op == "not_equals":
            return bool(actual != expected)
        if op == "one_of":
            return actual in expected
        if op == "contains":
            return str(expected) in str(actual)
        if op == "not_contains":
            return str(expected) not in str(actual)
        if op == "greater":
            return float(actual) > float(expected)
        if op == "less":
            return float(actual) < float(expected)
    except (TypeError, ValueError):
        return False
    raise ValueError(op)


def measurement(m: MeasureSpec, step: Step, ctx: Context) -> Measurement:
    def num(path: str | None) -> float | None:
        if path is None:
            return None
        try:
            return float(lookup(step.data, path))
        except (KeyError, TypeError, ValueError):
            return None

    per = num(m.per) if m.per else 1.0
    per = per if per else 1.0
    y, lo, hi = num(m.y), num(m.min), num(m.max)
    return Measurement(series=ctx.expand(m.series), x_name=m.x_name, x=float(ctx.resolve(m.x)),
                       y_name=m.y_name, y=None if y is None else y / per,
                       min=None if lo is None else lo / per,
                       max=None if hi is None else hi / per)


Hook = Callable[[StepSpec, dict[str, Any], Guest, Context], Step]


def step_label(st: StepSpec) -> str:
    """How messages and results name a step: its id, else its action."""
    if st.id is not None:
        return st.id
    if st.run is not None:
        return "run: " + (st.run if len(st.run) <= 60 else st.run[:57] + "...")
    if st.qmp is not None:
        return f"qmp: {st.qmp.execute}"
    if st.inject is not None:
        return f"inject: {st.inject.kind}"
    if st.dcd is not None:
        return f"dcd: {st.dcd.kind}"
    if st.hotplug is not None:
        return f"hotplug: {st.hotplug.add or st.hotplug.remove}"
    if st.kselftest is not None:
        return st.kselftest
    if st.tiering is not None:
        return f"tiering: {st.tiering.policy}"
    return f"mark: {st.mark}" if st.mark is not None else "promote"


def _run_step(st: StepSpec, loop_vars: dict[str, Any], guest: Guest, ctx: Context,
              hooks: dict[str, Hook]) -> Step:
    if st.run is not None:
        command = ctx.expand(st.run)
        wrapped = command if ctx.dram_cpus is None or not ctx.on_dram_node else \
            f"taskset -c {ctx.dram_cpus} sh -c {shlex.quote(command)}"
        res = guest.session.run(wrapped, user=st.user, timeout=st.timeout)
        data = last_json_object(res.stdout) if st.json_ else None
        if st.json_ and data is None:
            raise ScenarioRunError(f"no JSON on stdout (status {res.status}): "
                                   f"{res.stdout[-300:]!r} {res.stderr[-300:]!r}")
        if st.check and res.status != 0:
            raise ScenarioRunError(f"failed with status {res.status}: "
                                   f"{(res.stderr or res.stdout)[-500:]}")
        return Step(id=st.id or "", kind="run", command=command, user=st.user,
                    status=res.status, seconds=res.seconds, stdout=res.stdout,
                    stderr=res.stderr, data=data)
    if st.kselftest is not None:
        return _run_kselftest(st, st.kselftest, guest, ctx)
    if st.qmp is not None:
        arguments = ctx.resolve(st.qmp.arguments) if st.qmp.arguments is not None else None
        start = time.monotonic()
        reply = guest.machine.qmp(st.qmp.execute, arguments)
        return Step(id=st.id or "", kind="qmp",
                    command=json.dumps({"execute": st.qmp.execute, "arguments": arguments}),
                    status=0, seconds=time.monotonic() - start, data=reply)
    if st.inject is not None:
        return run_inject(st, guest, ctx, ctx.topology)
    if st.dcd is not None:
        return run_dcd(st, guest, ctx, ctx.topology)
    if st.hotplug is not None:
        return run_hotplug(st, guest, ctx, ctx.topology)
    kind = "mark" if st.mark is not None else "tiering" if st.tiering is not None else "promote"
    hook = hooks.get(kind)
    if hook is None:
        raise ScenarioRunError(f"a '{kind}' step needs the plugin: add 'plugin:' to the scenario")
    return hook(st, loop_vars, guest, ctx)


#: kselftest's exit status for "skipped" (KSFT_SKIP).
KSFT_SKIP = 4


def _run_kselftest(st: StepSpec, name: str, guest: Guest, ctx: Context) -> Step:
    """Run one of the kernel's selftests; its TAP, read, is the step's data."""
    sid = st.id or ""
    built = ctx.selftests
    if built is None or name not in built.built:
        absent = built.absent.get(name) if built is not None else None
        why = absent.why if absent is not None else \
            "no selftests were built for this kernel (a --kernel bzImage has no source tree)"
        kind = absent.kind if absent is not None else "missing"
        return Step(id=sid, kind="kselftest", command=name, data={"absent": kind, "why": why})
    directory, program = name.split("/")
    command = f"cd {GUEST_DIR}/{directory} && ./{program} {ctx.expand(st.args)}".rstrip()
    res = guest.session.run(command, user=st.user, timeout=st.timeout or TIMEOUTS.kselftest)
    tap = tap_parse(res.stdout, res.stderr)
    return Step(id=sid, kind="kselftest", command=command, user=st.user, status=res.status,
                seconds=res.seconds, stdout=res.stdout, stderr=res.stderr,
                data={"test": name, "plan": tap.plan, "bailed": tap.bailed,
                      "missing": list(tap.missing),
                      "cases": [asdict(c) for c in tap.cases]})


def suite_checks(step: Step) -> list[Check]:
    """One check per case a kselftest step reported, and one for whatever went wrong
    around them (a test that could not be built, died mid-plan or printed no TAP)."""
    data = step.data if isinstance(step.data, dict) else {}
    label = step.id or step.command
    name = str(data.get("test", step.command))

    def made(case: str, ok: bool, message: str, actual: Any = None,
             skipped: str | None = None) -> Check:
        return Check(ok=ok, message=message, step=label, field=case, op="tap",
                     expected="ok", actual=actual, case=case, skipped=skipped)

    if "absent" in data:
        why = str(data.get("why", ""))
        if data["absent"] == "missing":
            return [made(name, True, f"{name}: skipped: {why}", "skip", why)]
        return [made(name, False, f"{name}: {why}", "not built")]
    checks = []
    for c in data.get("cases", []):
        case, result, detail = str(c["name"]), str(c["result"]), str(c.get("detail", ""))
        if result == "skip":
            checks.append(made(case, True, f"{case}: skipped: {detail}", result, detail))
        elif result == "not ok":
            said = f": {detail.splitlines()[0]}" if detail else ""
            checks.append(made(case, False, f"{case}: not ok{said}", result))
        else:
            checks.append(made(case, True, f"{case}: {result}", result))
    for n in data.get("missing", []):
        checks.append(made(f"{name} #{n}", False, f"{name}: case {n} of {data.get('plan')} "
                           f"never reported (the test died or bailed out: "
                           f"{data.get('bailed') or f'exit status {step.status}'})", "missing"))
    cases_ok = all(c.ok for c in checks)
    if not data.get("cases") or (cases_ok and step.status not in (0, KSFT_SKIP)):
        checks.append(made(name, False, f"{name}: exited {step.status} "
                           f"{'with no TAP case' if not data.get('cases') else 'after its cases'}"
                           f": {(step.stderr or step.stdout)[-300:].strip()!r}",
                           f"status {step.status}"))
    return checks


def run_steps(spec: ScenarioSpec, variant: str, guest: Guest, ctx: Context, steps: list[Step],
              measurements: list[Measurement], hooks: dict[str, Hook], steps_log: Path) -> None:
    """Run the steps in order, appending to ``steps`` and ``measurements`` as they end.

    The step boundary: anything a step raises, whatever its type, leaves as
    :class:`StepFailed` naming the step (interrupts still pass through).
    """
    for st, loop_vars in expand_steps(spec.steps, variant):
        ctx.vars.update(loop_vars)
        try:
            step = _run_step(st, loop_vars, guest, ctx, hooks)
            point = measurement(st.measure, step, ctx) if st.measure is not None else None
        except Exception as exc:
            raise StepFailed(step_label(st), exc) from exc
        # Templates may name a step's whole output; the results file keeps its tail.
        kept = replace(step, stdout=step.stdout[-STDOUT_KEEP:], stderr=step.stderr[-STDOUT_KEEP:])
        steps.append(kept)
        with open(steps_log, "a") as f:
            f.write(json.dumps(asdict(kept)) + "\n")
        if st.id is not None:
            ctx.steps[st.id] = step
            # In a foreach, each repetition is also known as ID_VALUE.
            for value in loop_vars.values():
                ctx.steps[f"{st.id}_{value}"] = step
        if point is not None:
            measurements.append(point)


def topology_path(name: str) -> Path:
    path = Path(name)
    return path if path.suffix == ".yaml" else DATA_ROOT / "topologies" / f"{name}.yaml"


class PluginHooks(Protocol):
    """What a scenario run needs of the plugin (``cxlrig.scenario.plugin``)."""

    plugin: Plugin

    def before_start(self, machine: Machine, layout: MemoryLayout) -> None: ...
    def attach(self, guest: Guest) -> None: ...
    def hooks(self) -> dict[str, Hook]: ...
    def summary(self) -> PluginData | None: ...


HooksFactory = Callable[[ScenarioSpec, Topology, Path], "PluginHooks | None"]


def _save_traceback(run_path: Path, exc: BaseException) -> str | None:
    """Write the traceback of ``exc`` into the run directory; its file name."""
    try:
        text = "".join(traceback.format_exception(exc))
        (run_path / TRACEBACK_FILE).write_text(text)
    except OSError as err:
        log.warning("could not save the traceback in %s: %s", run_path, err)
        return None
    return TRACEBACK_FILE


def run_scenario(spec: ScenarioSpec, variant: str, image: GuestImage, results_dir: Path, *,
                 topology: str | None = None, accel: str = "tcg",
                 hooks_factory: HooksFactory | None = None, judge_as: str | None = "") -> Run:
    """Boot, run the steps, judge.

    ``judge_as`` names the variant whose steps and expectations apply: by
    default ``variant`` itself; None for a kernel nobody wrote expectations
    for, whose run evaluates every variant's checks and ends ``unjudged``.

    Never raises for anything the scenario or the machine did: a failed
    expectation is ``fail``; anything that stopped the run (a boot that did
    not come up, a step that raised whatever it raised) is ``error`` with the
    message, the step and the traceback saved in the run directory. Only an
    interrupt (Ctrl-C, SIGTERM) leaves, after the machine is stopped.
    """
    topo_name = topology or spec.topology
    run_path = results_dir / f"{spec.name}-{variant}"
    run_path.mkdir(parents=True, exist_ok=True)
    steps: list[Step] = []
    measurements: list[Measurement] = []
    checks: list[Check] = []
    plugin: PluginData | None = None
    verdict, error, error_step, tb = Verdict.ERROR, None, None, None
    like: str | None = variant if judge_as == "" else judge_as
    unjudged_reason: str | None = None
    boot_s: float | None = None
    bring_up_s: float | None = None
    start = time.monotonic()
    try:
        topo = load(topology_path(topo_name))
        lacks = spec.unmet(topo)
        if lacks:
            return _skipped(spec, variant, topo_name,
                            f"topology {topo.name} does not apply: {'; '.join(lacks)}")
        topo = spec.machine(topo)
        ctx = Context(topo, variant, spec.on_dram_node)
        session = hooks_factory(spec, topo, run_path) if hooks_factory else None
        files = [GuestFile.parse(f) for f in spec.files]
        if spec.kselftests:
            ctx.selftests = load_selftests(image.kernel)
            if ctx.selftests is not None and ctx.selftests.built:
                files.append(GuestFile(ctx.selftests.root, PurePosixPath(GUEST_DIR)))
        initrd = with_files(image.initrd, files)
        full = GuestImage(image.kernel, initrd, f"{image.append} {spec.append}".strip())
        try:
            with booted(topo, full, RunDir(run_path), accel=accel,
                        plugin=session.plugin if session else None,
                        before_start=session.before_start if session else None) as guest:
                boot_s, bring_up_s = guest.boot_seconds, guest.bring_up_seconds
                for reg in guest.regions:
                    ctx.vars[f"region_base_{reg.id}"] = f"{reg.base:#x}"
                    ctx.vars[f"region_name_{reg.id}"] = reg.name
                for device, memdev in guest.memdevs.items():
                    ctx.vars[f"memdev_{device}"] = memdev
                if "cxl_device" in ctx.vars:
                    ctx.vars["cxl_memdev"] = guest.memdevs.get(ctx.vars["cxl_device"], "")
                    first = next(r for r in topo.booted_regions if r.type == "ram")
                    ctx.vars["cxl_region"] = ctx.vars.get(f"region_name_{first.id}", "")
                if session:
                    session.attach(guest)
                run_steps(spec, like or "", guest, ctx, steps, measurements,
                          session.hooks() if session else {}, run_path / "steps.jsonl")
        finally:
            if session:
                plugin = session.summary()
        suites = [c for st in steps if st.kind == "kselftest" for c in suite_checks(st)]
        suites += [c for st in steps if st.kind == "inject"
                   for c in fault_checks(st)]
        if like is not None:
            expectations = [*spec.expect.get("all", []), *spec.expect.get(like, [])]
            checks = [*suites, *(check(ex, ctx) for ex in expectations)]
            verdict = Verdict.PASS if all(c.ok for c in checks) else Verdict.FAIL
        else:
            checks, unjudged_reason = _every_variants_checks(spec, ctx)
            checks = [*suites, *checks]
            verdict = Verdict.UNJUDGED
    except Exception as exc:
        error = str(exc) if isinstance(exc, CxlrigError) else \
            f"internal error: {type(exc).__name__}: {exc}"
        error_step = exc.step if isinstance(exc, StepFailed) else None
        tb = _save_traceback(run_path, exc)
        log.warning("%s on %s could not complete: %s", spec.name, variant, error)
    return Run(scenario=spec.name, variant=variant, verdict=verdict, title=spec.title,
               point=spec.point, reviewers=tuple(spec.reviewers), topology=topo_name,
               predicted=spec.predicted.get(like or "", ""), seconds=time.monotonic() - start,
               judged_as=like if like != variant else None,
               reason=unjudged_reason if verdict is Verdict.UNJUDGED else None,
               run_dir=run_path.name, error=error, error_step=error_step, traceback=tb,
               boot_seconds=boot_s, bring_up_seconds=bring_up_s,
               steps=tuple(steps), checks=tuple(checks), measurements=tuple(measurements),
               plugin=plugin)


def _every_variants_checks(spec: ScenarioSpec, ctx: Context) -> tuple[list[Check], str]:
    """Every expectation of every variant, as what this kernel did; and a summary."""
    common = [check(ex, ctx) for ex in spec.expect.get("all", [])]
    checks = list(common)
    held = []
    for name in spec.variants:
        own = [check(ex, ctx) for ex in spec.expect.get(name, [])]
        checks += [replace(c, message=f"[as {name}] {c.message}") for c in own]
        ok = sum(c.ok for c in [*common, *own])
        held.append(f"as {name} {ok} of {len(common) + len(own)} checks hold")
    return checks, "no expectation for this variant; " + ", ".join(held)


def last_json_object(stdout: str) -> Any:
    """The last line of ``stdout`` that parses as a JSON object, or None."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


class SuiteProgress:
    """What :func:`run_suite` tells its caller as it goes; every method may be overridden."""

    def building(self, line: str) -> None:
        """A kernel or image is being built: ``line`` says what it is at."""

    def started(self, spec: ScenarioSpec, variant: str) -> None:
        """A run is about to boot its machine."""

    def finished(self, run: Run) -> None:
        """A run ended, whatever its verdict."""


def _skipped(spec: ScenarioSpec, variant: str, topology: str | None, reason: str) -> Run:
    return Run(scenario=spec.name, variant=variant, verdict=Verdict.SKIP, title=spec.title,
               point=spec.point, reviewers=tuple(spec.reviewers),
               topology=topology or spec.topology, reason=reason)


def _errored(spec: ScenarioSpec, variant: str, topology: str | None, error: str,
             seconds: float = 0.0) -> Run:
    return Run(scenario=spec.name, variant=variant, verdict=Verdict.ERROR, title=spec.title,
               point=spec.point, reviewers=tuple(spec.reviewers),
               topology=topology or spec.topology, predicted=spec.predicted.get(variant, ""),
               seconds=seconds, error=error)


def run_suite(specs: Sequence[ScenarioSpec], results_dir: Path, *,
              variants: Sequence[str] | None = None, topology: str | None = None,
              image_for: Callable[[str | Variant], GuestImage],
              hooks_factory: HooksFactory | None = None,
              progress: SuiteProgress | None = None,
              series: Sequence[Variant] = ()) -> Results:
    """Run every scenario on each of its variants (or those of ``variants`` it has).

    ``series`` are users' kernels: each runs every scenario, judged as its
    declaration says (:meth:`Variant.judge_as`), or unjudged; with series and
    no ``variants``, only the series run. ``image_for(variant)`` builds or
    finds the guest image; a variant whose image cannot be had makes each of
    its runs ``error``. A variant asked for that a scenario does not list is a
    ``skip`` with the reason. ``results.json`` is rewritten after every run,
    and written whole even when an interrupt ends the suite (the interrupted
    run is an ``error``).
    """
    progress = progress or SuiteProgress()
    writer = ResultsWriter(results_dir)
    images: dict[str, GuestImage | str] = {}
    try:
        for spec in specs:
            kernels: list[str | Variant] = [*(variants or ([] if series else spec.variants)),
                                           *series]
            for kernel in kernels:
                variant = kernel if isinstance(kernel, str) else kernel.name
                judge = kernel if isinstance(kernel, str) else kernel.judge_as(spec.name)
                if judge is not None and judge not in spec.variants:
                    as_ = "" if judge == variant else f"judged as {judge}, and "
                    run = _skipped(spec, variant, topology, f"{as_}the scenario lists only "
                                   f"{', '.join(spec.variants)}")
                    writer.add(run)
                    progress.finished(run)
                    continue
                if variant not in images:
                    try:
                        images[variant] = image_for(kernel)
                    except CxlrigError as exc:
                        images[variant] = f"no guest image for {variant}: {exc}"
                image = images[variant]
                progress.started(spec, variant)
                start = time.monotonic()
                try:
                    run = _errored(spec, variant, topology, image) if isinstance(image, str) \
                        else run_scenario(spec, variant, image, results_dir, topology=topology,
                                          hooks_factory=hooks_factory, judge_as=judge)
                except BaseException:
                    console = ConsoleWatcher(RunDir(results_dir / f"{spec.name}-{variant}")
                                             .console_log)
                    writer.add(_errored(spec, variant, topology,
                                        f"interrupted\n{console.tail()}",
                                        time.monotonic() - start))
                    raise
                writer.add(run)
                progress.finished(run)
    finally:
        writer.write()
    return load_results(results_dir)
