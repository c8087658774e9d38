"""The one results contract: what a scenario run produced, as frozen dataclasses.

The scenario runner builds these objects, :mod:`cxlrig.results.writer` writes
them to ``results.json``, the JSON Schema in ``docs/results.schema.json`` is
generated from them (:mod:`cxlrig.results.schema`), and every report reads
them back with :func:`load_results` and nothing else of ours, so a results
directory from last night can be re-rendered today without QEMU or a guest.

Optional fields may be absent (older or partial files); required ones are
reported all at once, each as ``file: path.to.key: what is wrong``.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from cxlrig.errors import CxlrigError

log = logging.getLogger(__name__)

#: The ``version`` of ``results.json`` this cxlrig writes. Version 2 added the
#: ``skip`` verdict, ``reason``, ``error_step``, ``traceback`` and the plugin's
#: ``sample``; version 3 a check's ``case`` and ``skipped`` (test suites). Older
#: files have the same shape without them and read as is.
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
RESULTS_FILE = "results.json"


class ResultsFormatError(CxlrigError):
    """``results.json`` is missing, not JSON, or not in the expected format."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    #: The run could not complete, so nothing was judged.
    ERROR = "error"
    #: Not run, for the ``reason`` given (the scenario does not apply).
    SKIP = "skip"
    #: Ran on a kernel no expectation was written for (a user's series with
    #: no ``like``): the checks say what it did, as each variant would be
    #: judged, and the ``reason`` sums them up. Neither pass nor fail.
    UNJUDGED = "unjudged"


@dataclass(frozen=True)
class Step:
    #: Empty for a step the scenario gave no id.
    id: str
    kind: str = "run"
    command: str = ""
    user: str | None = None
    #: Exit status of a command; None for steps that have none or never ended.
    status: int | None = None
    seconds: float | None = None
    stdout: str = ""
    stderr: str = ""
    #: What the step's JSON output or QMP reply held: any JSON value.
    data: Any = None


@dataclass(frozen=True)
class Check:
    ok: bool
    #: Older files may lack it: the reader then writes one from the fields below.
    message: str = ""
    step: str | None = None
    field: str | None = None
    op: str | None = None
    #: Any JSON value; absent and null are both None.
    expected: Any = None
    actual: Any = None
    #: The test case of a suite (a kernel selftest's TAP line) this check
    #: reports, as ``TEST.CASE``; None for a scenario's own expectations.
    case: str | None = None
    #: The case did not run, for this reason (TAP's ``# SKIP``); ``ok`` is true.
    skipped: str | None = None


@dataclass(frozen=True)
class Measurement:
    series: str
    x: float
    #: None when the runner could not read the value: shown as a gap, not drawn.
    y: float | None = None
    x_name: str = "x"
    y_name: str = "y"
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Access:
    reads: int
    writes: int

    @property
    def total(self) -> int:
        return self.reads + self.writes


@dataclass(frozen=True)
class NodeAccess(Access):
    modelled_ns: int | None = None


@dataclass(frozen=True)
class Phase:
    #: None for a phase no mark closed (still open when the run ended).
    name: str | None
    nodes: Mapping[int, NodeAccess]
    devices: Mapping[str, Access]
    dram_share: float | None = None


@dataclass(frozen=True)
class SeriesPoint:
    t: float
    #: What ``t`` counts: "insn" (instructions) or "ns".
    unit: str
    #: Accesses per node since the previous point.
    nodes: Mapping[int, Access]


@dataclass(frozen=True)
class Mark:
    name: str
    t: float


@dataclass(frozen=True)
class PluginData:
    phases: tuple[Phase, ...] = ()
    series: tuple[SeriesPoint, ...] = ()
    marks: tuple[Mark, ...] = ()
    #: The plugin counted one access in ``sample`` (counts are scaled back up).
    sample: int = 1


@dataclass(frozen=True)
class Run:
    scenario: str
    variant: str
    verdict: Verdict
    title: str = ""
    point: str = ""
    reviewers: tuple[str, ...] = ()
    topology: str = ""
    predicted: str = ""
    seconds: float | None = None
    #: Relative to the results directory; None when the runner wrote none.
    run_dir: str | None = None
    error: str | None = None
    #: With an error raised by a step: that step's id (or its command).
    error_step: str | None = None
    #: With an error: the file in the run directory holding the traceback.
    traceback: str | None = None
    #: With skip: why the scenario was not run; with unjudged: what held.
    reason: str | None = None
    #: The variant whose expectations judged this run, when not ``variant``
    #: itself (a user's kernel declared ``like: v1``).
    judged_as: str | None = None
    #: From QEMU's start to the guest's shell prompt, and then to CXL memory
    #: online; None when the machine never got that far.
    boot_seconds: float | None = None
    bring_up_seconds: float | None = None
    steps: tuple[Step, ...] = ()
    checks: tuple[Check, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    plugin: PluginData | None = None

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def outcome(self) -> str:
        """What happened, in a few words: why it failed, or what was predicted and seen."""
        if self.verdict is Verdict.ERROR:
            first = (self.error or "").strip().splitlines()
            return first[0] if first else "could not complete"
        if self.verdict is Verdict.SKIP:
            return f"skipped: {self.reason}" if self.reason else "skipped"
        if self.verdict is Verdict.UNJUDGED:
            return self.reason or "no expectation for this variant"
        failed = self.failed_checks
        if self.verdict is Verdict.FAIL:
            if not failed:
                return "failed (no failed check recorded)"
            more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
            return failed[0].message + more
        return self.predicted or "as predicted"


@dataclass(frozen=True)
class ResultsFile:
    """What ``results.json`` holds; the JSON Schema is generated from this."""

    version: int
    runs: tuple[Run, ...]
    started: str | None = None
    #: None while the run is still going (the file is rewritten after each run).
    finished: str | None = None
    #: The cxlrig version that wrote the file.
    cxlrig: str | None = None


@dataclass(frozen=True)
class Results(ResultsFile):
    """A results file as read back, with the directory it was read from."""

    #: The results directory the file was read from.
    directory: Path = field(default=Path(), kw_only=True)

    @property
    def scenarios(self) -> tuple[str, ...]:
        """Scenario names in the order they were first run."""
        return tuple(dict.fromkeys(r.scenario for r in self.runs))

    @property
    def variants(self) -> tuple[str, ...]:
        """Variant names, sorted (v1 before v2 whatever order they ran in)."""
        return tuple(sorted(dict.fromkeys(r.variant for r in self.runs)))

    def runs_of(self, scenario: str) -> tuple[Run, ...]:
        return tuple(r for r in self.runs if r.scenario == scenario)

    def run(self, scenario: str, variant: str) -> Run | None:
        """The last run of ``scenario`` on ``variant`` (a rerun replaces an earlier one)."""
        found = None
        for r in self.runs:
            if r.scenario == scenario and r.variant == variant:
                found = r
        return found

    def count(self, verdict: Verdict) -> int:
        return sum(1 for r in self.runs if r.verdict is verdict)

    @property
    def exit_code(self) -> int:
        """The house convention: 0 all passed (skips and unjudged runs included),
        1 a check failed, 2 a run could not complete."""
        if self.count(Verdict.ERROR):
            return 2
        return 1 if self.count(Verdict.FAIL) else 0


# -- parsing --------------------------------------------------------------------------

T = TypeVar("T")
_MISSING = object()


class _Reader:
    """Collects every problem in one pass instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def get(self, obj: Mapping[str, Any], key: str, where: str, kind: type[T] | tuple[type, ...],
            default: Any = _MISSING) -> Any:
        """``obj[key]`` checked against ``kind``; ``default`` when absent or null if given."""
        path = f"{where}.{key}" if where else key
        value = obj.get(key, _MISSING)
        if value is _MISSING or (value is None and default is not _MISSING):
            if default is _MISSING:
                self.problem(path, "required key is missing")
                return None
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds:
            kinds = (*kinds, int)  # JSON has one number type: 8 is as good as 8.0
        # bool is an int to Python but never a number or a count in this file.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join(_JSON_NAMES.get(k, k.__name__) for k in dict.fromkeys(
                float if k is int and float in kinds else k for k in kinds))
            self.problem(path, f"expected {names}, got {_json_type(value)} {_short(value)}")
            return None if default is _MISSING else default
        if float in kinds and isinstance(value, int):
            return float(value)
        return value

    def objects(self, obj: Mapping[str, Any], key: str, where: str,
                parse: Callable[[Mapping[str, Any], str], T | None]) -> tuple[T, ...]:
        """A list of objects, each parsed by ``parse``; absent means empty."""
        items = self.get(obj, key, where, list, default=[])
        path = f"{where}.{key}" if where else key
        out: list[T] = []
        for i, item in enumerate(items):
            here = f"{path}[{i}]"
            if not isinstance(item, dict):
                self.problem(here, f"expected an object, got {_json_type(item)}")
                continue
            parsed = parse(item, here)
            if parsed is not None:
                out.append(parsed)
        return tuple(out)

    def node_map(self, obj: Mapping[str, Any], key: str, where: str,
                 parse: Callable[[Mapping[str, Any], str], T | None]) -> dict[int, T]:
        """``{"0": {...}, "1": {...}}``: node ids are integers written as JSON keys."""
        raw = self.get(obj, key, where, dict, default={})
        path = f"{where}.{key}"
        out: dict[int, T] = {}
        for k, v in raw.items():
            here = f"{path}.{k}"
            try:
                node = int(k)
            except ValueError:
                self.problem(here, "a node id must be an integer")
                continue
            if not isinstance(v, dict):
                self.problem(here, f"expected an object, got {_json_type(v)}")
                continue
            parsed = parse(v, here)
            if parsed is not None:
                out[node] = parsed
        return dict(sorted(out.items()))


_JSON_NAMES: dict[type, str] = {
    str: "a string", int: "an integer", float: "a number", bool: "true or false",
    list: "a list", dict: "an object",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _access(r: _Reader, o: Mapping[str, Any], where: str) -> Access:
    return Access(reads=r.get(o, "reads", where, int, 0), writes=r.get(o, "writes", where, int, 0))


def _node_access(r: _Reader, o: Mapping[str, Any], where: str) -> NodeAccess:
    return NodeAccess(reads=r.get(o, "reads", where, int, 0),
                      writes=r.get(o, "writes", where, int, 0),
                      modelled_ns=r.get(o, "modelled_ns", where, int, None))


def _phase(r: _Reader, o: Mapping[str, Any], where: str) -> Phase:
    devices_raw = r.get(o, "devices", where, dict, {})
    devices: dict[str, Access] = {}
    for name, v in devices_raw.items():
        if isinstance(v, dict):
            devices[name] = _access(r, v, f"{where}.devices.{name}")
        else:
            r.problem(f"{where}.devices.{name}", f"expected an object, got {_json_type(v)}")
    share = r.get(o, "dram_share", where, float, None)
    if share is not None and not 0.0 <= share <= 1.0:
        r.problem(f"{where}.dram_share", f"must be a fraction between 0 and 1, got {share}")
        share = None
    return Phase(
        name=r.get(o, "name", where, str, None),
        nodes=r.node_map(o, "nodes", where, lambda v, w: _node_access(r, v, w)),
        devices=devices,
        dram_share=share,
    )


def _series_point(r: _Reader, o: Mapping[str, Any], where: str) -> SeriesPoint | None:
    t = r.get(o, "t", where, float)
    if t is None:
        return None
    return SeriesPoint(t=t, unit=r.get(o, "unit", where, str, "insn"),
                       nodes=r.node_map(o, "nodes", where, lambda v, w: _access(r, v, w)))


def _mark(r: _Reader, o: Mapping[str, Any], where: str) -> Mark | None:
    name, t = r.get(o, "name", where, str), r.get(o, "t", where, float)
    if name is None or t is None:
        return None
    return Mark(name=name, t=t)


def _plugin(r: _Reader, o: Mapping[str, Any], where: str) -> PluginData:
    return PluginData(
        phases=r.objects(o, "phases", where, lambda v, w: _phase(r, v, w)),
        series=r.objects(o, "series", where, lambda v, w: _series_point(r, v, w)),
        marks=r.objects(o, "marks", where, lambda v, w: _mark(r, v, w)),
        sample=r.get(o, "sample", where, int, 1),
    )


def _step(r: _Reader, o: Mapping[str, Any], where: str) -> Step:
    return Step(
        id=r.get(o, "id", where, str, ""),
        kind=r.get(o, "kind", where, str, "run"),
        command=r.get(o, "command", where, str, ""),
        user=r.get(o, "user", where, str, None),
        status=r.get(o, "status", where, int, None),
        seconds=r.get(o, "seconds", where, float, None),
        stdout=r.get(o, "stdout", where, str, ""),
        stderr=r.get(o, "stderr", where, str, ""),
        data=o.get("data"),
    )


def _check(r: _Reader, o: Mapping[str, Any], where: str) -> Check | None:
    ok = r.get(o, "ok", where, bool)
    if ok is None:
        return None
    step = r.get(o, "step", where, str, None)
    field = r.get(o, "field", where, str, None)
    op = r.get(o, "op", where, str, None)
    expected, actual = o.get("expected"), o.get("actual")
    message = r.get(o, "message", where, str, None)
    if message is None:
        # Older files: rebuild a message close to the runner's own.
        subject = ".".join(p for p in (step, field) if p) or "check"
        message = f"{subject} {op or '=='} {_short(expected)}: got {_short(actual)}"
    return Check(ok=ok, message=message, step=step, field=field, op=op,
                 expected=expected, actual=actual, case=r.get(o, "case", where, str, None),
                 skipped=r.get(o, "skipped", where, str, None))


def _measurement(r: _Reader, o: Mapping[str, Any], where: str) -> Measurement | None:
    series, x = r.get(o, "series", where, str), r.get(o, "x", where, float)
    if series is None or x is None:
        return None
    return Measurement(series=series, x=x, y=r.get(o, "y", where, float, None),
                       x_name=r.get(o, "x_name", where, str, "x"),
                       y_name=r.get(o, "y_name", where, str, "y"),
                       min=r.get(o, "min", where, float, None),
                       max=r.get(o, "max", where, float, None))


def _relative(r: _Reader, o: Mapping[str, Any], key: str, where: str) -> str | None:
    value: str | None = r.get(o, key, where, str, None)
    if not value:
        return None
    p = PurePosixPath(value)
    # Links are made relative to the results directory: keep them inside it.
    if p.is_absolute() or ".." in p.parts or not p.parts:
        r.problem(f"{where}.{key}", f"must be a relative path inside the results directory, "
                  f"got {value!r}")
        return None
    return value


def _run(r: _Reader, o: Mapping[str, Any], where: str) -> Run | None:
    scenario = r.get(o, "scenario", where, str)
    variant = r.get(o, "variant", where, str)
    verdict_text = r.get(o, "verdict", where, str)
    verdict = None
    if verdict_text is not None:
        try:
            verdict = Verdict(verdict_text)
        except ValueError:
            r.problem(f"{where}.verdict", f"unknown verdict {verdict_text!r} "
                      f"(expected one of {', '.join(v.value for v in Verdict)})")
    reviewers = r.get(o, "reviewers", where, list, [])
    if not all(isinstance(x, str) for x in reviewers):
        r.problem(f"{where}.reviewers", "expected a list of strings")
        reviewers = [x for x in reviewers if isinstance(x, str)]
    plugin_raw = r.get(o, "plugin", where, dict, None)
    run = Run(
        scenario=scenario or "",
        variant=variant or "",
        verdict=verdict or Verdict.ERROR,
        title=r.get(o, "title", where, str, ""),
        point=r.get(o, "point", where, str, ""),
        reviewers=tuple(reviewers),
        topology=r.get(o, "topology", where, str, ""),
        predicted=r.get(o, "predicted", where, str, ""),
        seconds=r.get(o, "seconds", where, float, None),
        run_dir=_relative(r, o, "run_dir", where),
        error=r.get(o, "error", where, str, None),
        error_step=r.get(o, "error_step", where, str, None),
        traceback=_relative(r, o, "traceback", where),
        reason=r.get(o, "reason", where, str, None),
        judged_as=r.get(o, "judged_as", where, str, None),
        boot_seconds=r.get(o, "boot_seconds", where, float, None),
        bring_up_seconds=r.get(o, "bring_up_seconds", where, float, None),
        steps=r.objects(o, "steps", where, lambda v, w: _step(r, v, w)),
        checks=r.objects(o, "checks", where, lambda v, w: _check(r, v, w)),
        measurements=r.objects(o, "measurements", where, lambda v, w: _measurement(r, v, w)),
        plugin=None if plugin_raw is None else _plugin(r, plugin_raw, f"{where}.plugin"),
    )
    if scenario is None or variant is None or verdict is None:
        return None
    return run


def parse_results(data: Any, directory: Path, source: Path | None = None) -> Results:
    """Results from the already-decoded JSON ``data``; ``source`` names it in errors."""
    source = source or directory / RESULTS_FILE
    r = _Reader()
    if not isinstance(data, dict):
        raise ResultsFormatError(source, [f"expected a JSON object at the top, "
                                          f"got {_json_type(data)}"])
    version = r.get(data, "version", "", int)
    if version is not None and version not in READABLE_VERSIONS:
        # Nothing else is read: an unknown version may mean anything.
        *head, last = (str(v) for v in READABLE_VERSIONS)
        known = f"{', '.join(head)} and {last}" if head else last
        raise ResultsFormatError(source, [f"version: unknown version {version} "
                                          f"(this cxlrig reads versions {known})"])
    runs = r.get(data, "runs", "", list)
    parsed: list[Run] = []
    for i, item in enumerate(runs or []):
        here = f"runs[{i}]"
        if not isinstance(item, dict):
            r.problem(here, f"expected an object, got {_json_type(item)}")
            continue
        run = _run(r, item, here)
        if run is not None:
            parsed.append(run)
    results = Results(
        directory=directory,
        version=version or VERSION,
        runs=tuple(parsed),
        started=r.get(data, "started", "", str, None),
        finished=r.get(data, "finished", "", str, None),
        cxlrig=r.get(data, "cxlrig", "", str, None),
    )
    if r.problems:
        raise ResultsFormatError(source, r.problems)
    log.debug("read %d runs from %s", len(results.runs), source)
    return results


def load_results(results_dir: str | Path) -> Results:
    """Read ``results_dir/results.json``.

    Raises :class:`ResultsFormatError` naming the file and every bad key.
    """
    directory = Path(results_dir)
    path = directory / RESULTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFormatError(path, ["no such file (is this a results directory?)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFormatError(path, [f"cannot read: {exc}"]) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ResultsFormatError(path, [f"{where}: not JSON: {exc.msg}"]) from exc
    return parse_results(data, directory, path)
