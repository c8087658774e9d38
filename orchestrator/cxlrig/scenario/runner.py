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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cxlrig.errors import CxlrigError
from cxlrig.guest.boot import Guest, GuestImage, booted
from cxlrig.machine.runner import RunDir
from cxlrig.paths import REPO
from cxlrig.scenario.model import ExpectSpec, MeasureSpec, ScenarioSpec, StepSpec
from cxlrig.topology import Topology, load

log = logging.getLogger(__name__)

_TEMPLATE = re.compile(r"\$\{([^}]+)\}")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_STEP_REF = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)(.*)$")
STDOUT_KEEP = 4096


class ScenarioRunError(CxlrigError):
    """The scenario could not run to the end."""


@dataclass
class StepResult:
    id: str | None
    kind: str
    command: str
    user: str
    status: int
    seconds: float
    stdout: str = ""
    stderr: str = ""
    data: Any = None


@dataclass
class CheckResult:
    step: str
    field: str
    op: str
    expected: Any
    actual: Any
    ok: bool
    message: str


@dataclass
class RunResult:
    scenario: str
    title: str
    point: str
    reviewers: list[str]
    variant: str
    topology: str
    predicted: str
    verdict: str = "error"
    seconds: float = 0.0
    run_dir: str = ""
    error: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    plugin: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for st in out["steps"]:
            st["stdout"] = st["stdout"][-STDOUT_KEEP:]
            st["stderr"] = st["stderr"][-STDOUT_KEEP:]
        return out


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

    def __init__(self, topo: Topology, variant: str) -> None:
        ram = [r for r in topo.regions if r.type == "ram"]
        self.vars: dict[str, Any] = {
            "variant": variant,
            "dram_node": 0,
            "cxl_node": ram[0].node if ram else -1,
            "cxl_nodes": ",".join(str(n) for n in sorted({r.node for r in ram})),
        }
        self.steps: dict[str, StepResult] = {}

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


def _json_line(stdout: str) -> Any:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def check(ex: ExpectSpec, ctx: Context) -> CheckResult:
    step = ctx.steps.get(ex.step)
    expected = ctx.resolve(ex.expected)
    ex = ex.model_copy(update={"field": ctx.expand(ex.field)})
    if step is None:
        return CheckResult(ex.step, ex.field, ex.op, expected, None, False,
                           f"step '{ex.step}' did not run")
    try:
        actual = (getattr(step, ex.field) if ex.field in ("status", "stdout", "stderr")
                  else lookup(step.data, ex.field))
    except KeyError:
        return CheckResult(ex.step, ex.field, ex.op, expected, None, False,
                           f"{ex.step}: no field '{ex.field}' in the step's output")
    ok = _compare(ex.op, actual, expected)
    show = {"equals": "==", "not_equals": "!=", "one_of": "in", "contains": "contains",
            "greater": ">", "less": "<"}[ex.op]
    why = f" ({ex.why})" if ex.why else ""
    if ok:
        msg = f"{ex.step}: {ex.field} {show} {expected!r}{why}"
    else:
        msg = f"{ex.step}: {ex.field} is {actual!r}, expected {show} {expected!r}{why}"
    return CheckResult(ex.step, ex.field, ex.op, expected, actual, ok, msg)


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
        if op == "greater":
            return float(actual) > float(expected)
        if op == "less":
            return float(actual) < float(expected)
    except (TypeError, ValueError):
        return False
    raise ValueError(op)


def measurement(m: MeasureSpec, step: StepResult, ctx: Context) -> dict[str, Any]:
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
    return {"series": ctx.expand(m.series), "x_name": m.x_name,
            "x": float(ctx.resolve(m.x)), "y_name": m.y_name,
            "y": None if y is None else y / per,
            "min": None if lo is None else lo / per, "max": None if hi is None else hi / per}


Hook = Callable[[StepSpec, dict[str, Any], Guest, Context], StepResult]


def run_steps(spec: ScenarioSpec, variant: str, guest: Guest, ctx: Context, result: RunResult,
              hooks: dict[str, Hook], steps_log: Path) -> None:
    for st, loop_vars in expand_steps(spec.steps, variant):
        ctx.vars.update(loop_vars)
        if st.run is not None:
            command = ctx.expand(st.run)
            res = guest.session.run(command, user=st.user, timeout=st.timeout)
            step = StepResult(st.id, "run", command, st.user, res.status, res.seconds,
                              res.stdout, res.stderr, _json_line(res.stdout) if st.json_ else None)
            if st.json_ and step.data is None:
                raise ScenarioRunError(f"step {st.id or command!r}: no JSON on stdout "
                                       f"(status {res.status}): {res.stdout[-300:]!r} "
                                       f"{res.stderr[-300:]!r}")
            if st.check and res.status != 0:
                raise ScenarioRunError(f"step {st.id or command!r} failed with status "
                                       f"{res.status}: {(res.stderr or res.stdout)[-500:]}")
        elif st.qmp is not None:
            args = ctx.resolve(st.qmp)
            start = time.monotonic()
            data = guest.machine.qmp(str(args["execute"]), args.get("arguments"))
            step = StepResult(st.id, "qmp", json.dumps(args), "", 0,
                              time.monotonic() - start, data=data)
        else:
            kind = "mark" if st.mark is not None else "promote"
            hook = hooks.get(kind)
            if hook is None:
                raise ScenarioRunError(f"a '{kind}' step needs the plugin: add 'plugin:' "
                                       f"to the scenario")
            step = hook(st, loop_vars, guest, ctx)
        result.steps.append(step)
        with open(steps_log, "a") as f:
            f.write(json.dumps(asdict(step)) + "\n")
        if st.id is not None:
            ctx.steps[st.id] = step
            # In a foreach, each repetition is also known as ID_VALUE.
            for value in loop_vars.values():
                ctx.steps[f"{st.id}_{value}"] = step
        if st.measure is not None:
            result.measurements.append(measurement(st.measure, step, ctx))


def topology_path(name: str) -> Path:
    path = Path(name)
    return path if path.suffix == ".yaml" else REPO / "topologies" / f"{name}.yaml"


def run_scenario(spec: ScenarioSpec, variant: str, image: GuestImage, results_dir: Path, *,
                 topology: str | None = None, accel: str = "tcg",
                 hooks_factory: Callable[..., Any] | None = None) -> RunResult:
    """Boot, run the steps, judge; never raises for a scenario-level failure."""
    topo_name = topology or spec.topology
    result = RunResult(spec.name, spec.title, spec.point, list(spec.reviewers), variant,
                       topo_name, spec.predicted.get(variant, ""))
    run_path = results_dir / f"{spec.name}-{variant}"
    run_path.mkdir(parents=True, exist_ok=True)
    result.run_dir = run_path.name
    start = time.monotonic()
    try:
        topo = load(topology_path(topo_name))
        ctx = Context(topo, variant)
        plugin_session = hooks_factory(spec, topo, run_path) if hooks_factory else None
        plugin = plugin_session.plugin if plugin_session else None
        hooks = plugin_session.hooks() if plugin_session else {}
        full = GuestImage(image.kernel, image.initrd, f"{image.append} {spec.append}".strip())
        try:
            with booted(topo, full, RunDir(run_path), accel=accel, plugin=plugin) as guest:
                for reg in guest.regions:
                    ctx.vars[f"region_base_{reg.id}"] = f"{reg.base:#x}"
                    ctx.vars[f"region_name_{reg.id}"] = reg.name
                if plugin_session:
                    plugin_session.attach(guest)
                run_steps(spec, variant, guest, ctx, result, hooks, run_path / "steps.jsonl")
        finally:
            if plugin_session:
                result.plugin = plugin_session.summary()
        expectations = [*spec.expect.get("all", []), *spec.expect.get(variant, [])]
        result.checks = [check(ex, ctx) for ex in expectations]
        result.verdict = "pass" if all(c.ok for c in result.checks) else "fail"
    except CxlrigError as exc:
        result.verdict = "error"
        result.error = str(exc)
        log.warning("%s on %s could not complete: %s", spec.name, variant, exc)
    result.seconds = time.monotonic() - start
    return result
