"""Matrix files: topologies x kernel variants x scenarios, and the cells they make.

A matrix file (``matrices/*.yaml``) is read with the same located errors as
every other file of ours (``FILE:LINE:COL: key.path: message``). Its plan is
deterministic: the same file and the same data give the same cells in the
same order, so ``--shard I/N`` slices agree between machines.

Names resolve the way a user expects: ``default`` is a shipped topology,
``topologies/*.yaml`` a glob relative to the matrix file's directory (then to
cxlrig's data), ``tag:nightly`` every scenario with that tag, ``promotion-*``
scenario names by glob.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cxlrig.errors import CheckFailed
from cxlrig.images.variants import VARIANTS
from cxlrig.matrix.record import Cell
from cxlrig.paths import DATA_ROOT
from cxlrig.scenario.model import ScenarioError, ScenarioSpec, load_scenario
from cxlrig.topology import Topology, TopologyError, load
from cxlrig.topology.validate import shape_problems
from cxlrig.topology.yamlmarks import Located, Problem, YamlLoadError, read_located

Label = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantSpec(_Strict):
    """A kernel for the matrix: a built-in variant, or the user's kernel judged as one."""

    #: The name cells and reports show.
    name: Label
    #: The built-in variant whose expectations apply (and that is built when
    #: none of kernel, tree, series is given).
    like: str
    #: A bzImage to boot instead of building.
    kernel: str | None = None
    #: A kernel tree to build with our config fragment (and the like variant's name).
    tree: str | None = None
    #: A patch series (a directory of patches or an mbox) on the shipped sources,
    #: or, with ``tree``, on a copy of that tree.
    series: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> VariantSpec:
        if self.kernel is not None and (self.tree is not None or self.series is not None):
            given = [k for k in ("tree", "series") if getattr(self, k) is not None]
            raise ValueError(f"a variant with a kernel is booted as it is: it takes no "
                             f"{' or '.join(given)}")
        return self


class RuleSpec(_Strict):
    """Cells to add or drop: each key a name or a glob; absent keys match anything."""

    scenario: str | None = None
    topology: str | None = None
    variant: str | None = None

    @model_validator(mode="after")
    def _some_key(self) -> RuleSpec:
        if self.scenario is None and self.topology is None and self.variant is None:
            raise ValueError("a rule needs at least one of scenario, topology, variant")
        return self

    def matches(self, scenario: str, topology: str, variant: str) -> bool:
        return all(pat is None or fnmatch.fnmatchcase(value, pat) for pat, value in (
            (self.scenario, scenario), (self.topology, topology), (self.variant, variant)))


class MatrixSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")]
    description: str = ""
    #: Topology names, files or globs.
    topologies: Annotated[list[str], Field(min_length=1)]
    #: Built-in variant names, or {name, like, kernel | tree}.
    variants: Annotated[list[str | VariantSpec], Field(min_length=1)] = ["v1", "v2"]
    #: Scenario names, globs over names, files, or tag:NAME.
    scenarios: Annotated[list[str], Field(min_length=1)]
    #: Only the cells these rules match (after the cross product), if given.
    include: list[RuleSpec] = []
    exclude: list[RuleSpec] = []
    #: A cell that ends in error is run again this many times; passing on a
    #: retry makes it flaky.
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    #: Seconds a cell may take (boot, steps, shutdown) before it is stopped as error.
    timeout: Annotated[float, Field(gt=0, le=86400)] = 1800
    #: Host files put into every cell's guest, ``HOST[:GUEST]`` as with --add
    #: (HOST relative to the matrix file).
    files: list[str] = []

    def variant_specs(self) -> list[VariantSpec]:
        return [v if isinstance(v, VariantSpec) else VariantSpec(name=v, like=v)
                for v in self.variants]


class MatrixError(CheckFailed):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Plan:
    """A matrix file, resolved: the variants and every cell, in order."""

    spec: MatrixSpec
    path: Path
    variants: tuple[VariantSpec, ...]
    cells: tuple[Cell, ...]
    #: Scenarios and topologies by the name cells use.
    scenarios: dict[str, ScenarioSpec]
    topologies: dict[str, Topology]

    def variant(self, name: str) -> VariantSpec:
        return next(v for v in self.variants if v.name == name)


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _candidates(entry: str, base: Path, kind: str) -> list[Path]:
    """Files an entry names.

    A bare name or name glob (``default``, ``promotion-*``) is a shipped
    file's stem; anything with a ``/`` or ending in ``.yaml`` is a path or
    glob relative to the matrix file's directory, then to cxlrig's data.
    """
    if "/" not in entry and not entry.endswith(".yaml"):
        shipped = DATA_ROOT / kind
        return sorted(p for p in shipped.glob("*.yaml") if fnmatch.fnmatchcase(p.stem, entry))
    for root in (base, DATA_ROOT):
        pattern = str(Path(entry).expanduser()) if Path(entry).expanduser().is_absolute() \
            else str(root / entry)
        found = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
        if found:
            return found
    return []


def load_matrix(path: str | Path) -> Plan:
    """Read, validate and expand a matrix file, or raise MatrixError (every problem located)."""
    path = Path(path)
    try:
        doc = read_located(path)
    except YamlLoadError as exc:
        raise MatrixError(exc.problems) from None
    if not isinstance(doc.data, dict):
        raise MatrixError([doc.problem((), "a matrix must be a mapping")])
    try:
        spec = MatrixSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise MatrixError(shape_problems(doc, exc, MatrixSpec)) from None
    return _plan(doc, spec, path)


def _plan(doc: Located, spec: MatrixSpec, path: Path) -> Plan:
    problems: list[Problem] = []
    base = path.parent
    topologies: dict[str, Topology] = {}
    topo_files: dict[str, Path] = {}
    for i, entry in enumerate(spec.topologies):
        files = _candidates(entry, base, "topologies")
        if not files:
            problems.append(doc.problem(("topologies", i), f"'{entry}' names no topology file"))
        for f in files:
            try:
                topo = load(f)
            except TopologyError as exc:
                problems.append(doc.problem(("topologies", i), f"{f}: not a valid topology: "
                                            f"{exc.problems[0]}"))
                continue
            if topo.name in topologies and topo_files[topo.name] != f:
                problems.append(doc.problem(("topologies", i), f"{f}: topology name "
                                            f"'{topo.name}' is also {topo_files[topo.name]}"))
                continue
            topologies[topo.name] = topo
            topo_files[topo.name] = f

    scenarios: dict[str, ScenarioSpec] = {}
    scen_files: dict[str, Path] = {}
    for i, entry in enumerate(spec.scenarios):
        if entry.startswith("tag:"):
            tag = entry[4:]
            files = [f for f in _candidates("*", base, "scenarios") if _has_tag(f, tag)]
            what = f"no shipped scenario has the tag '{tag}'"
        else:
            files = _candidates(entry, base, "scenarios")
            what = f"'{entry}' names no scenario"
        if not files:
            problems.append(doc.problem(("scenarios", i), what))
        for f in files:
            try:
                sc, _ = load_scenario(f)
            except ScenarioError as exc:
                problems.append(doc.problem(("scenarios", i), f"{f}: not a valid scenario: "
                                            f"{exc.problems[0]}"))
                continue
            if sc.name in scenarios and scen_files[sc.name] != f:
                problems.append(doc.problem(("scenarios", i), f"{f}: scenario name "
                                            f"'{sc.name}' is also {scen_files[sc.name]}"))
                continue
            scenarios[sc.name] = sc
            scen_files[sc.name] = f

    variants = spec.variant_specs()
    seen: set[str] = set()
    for i, v in enumerate(variants):
        if v.name in seen:
            problems.append(doc.problem(("variants", i), f"variant '{v.name}' is listed twice"))
        seen.add(v.name)
        if v.like not in VARIANTS:
            at: tuple[str | int, ...] = ("variants", i) if v.name == v.like and \
                isinstance(spec.variants[i], str) else ("variants", i, "like")
            problems.append(doc.problem(at, f"'{v.like}' is not a variant "
                                        f"({', '.join(VARIANTS)})"))
        for key in ("kernel", "tree", "series"):
            value = getattr(v, key)
            if value is not None and not (base / value).expanduser().exists():
                what = "file" if key == "kernel" else "file or directory"
                problems.append(doc.problem(("variants", i, key), f"{value}: no such {what}"))
    from cxlrig.images.overlay import resolve_all

    added, bad = resolve_all(spec.files, base)
    problems += [doc.problem(("files", i), why) for i, why in bad]
    spec = spec.model_copy(update={"files": added})
    for key, rules in (("include", spec.include), ("exclude", spec.exclude)):
        for i, rule in enumerate(rules):
            for field_, known in (("scenario", scenarios), ("topology", topologies),
                                  ("variant", seen)):
                pat = getattr(rule, field_)
                if pat is not None and not any(fnmatch.fnmatchcase(k, pat) for k in known):
                    problems.append(doc.problem((key, i, field_), f"'{pat}' matches no "
                                                f"{field_} of this matrix"))
    if problems:
        raise MatrixError(problems)

    cells = []
    for tname in sorted(topologies):
        for v in variants:
            for sname in sorted(scenarios):
                if spec.include and not any(r.matches(sname, tname, v.name)
                                            for r in spec.include):
                    continue
                if any(r.matches(sname, tname, v.name) for r in spec.exclude):
                    continue
                cells.append(Cell(
                    key=f"{tname}/{v.name}/{sname}", scenario=sname, topology=tname,
                    variant=v.name, scenario_file=str(scen_files[sname].resolve()),
                    topology_file=str(topo_files[tname].resolve()),
                    topology_hash=file_hash(topo_files[tname])))
    if not cells:
        raise MatrixError([doc.problem((), "the matrix has no cells (its include and exclude "
                                       "rules leave nothing)")])
    return Plan(spec=spec, path=path, variants=tuple(variants), cells=tuple(cells),
                scenarios=scenarios, topologies=topologies)


def _has_tag(path: Path, tag: str) -> bool:
    try:
        return tag in load_scenario(path)[0].tags
    except ScenarioError:
        return False


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` with 1 <= I <= N, as a pair; ValueError otherwise."""
    head, sep, tail = text.partition("/")
    try:
        i, n = int(head), int(tail)
    except ValueError:
        raise ValueError(f"{text!r}: a shard is I/N, e.g. 2/4") from None
    if not sep or n < 1 or not 1 <= i <= n:
        raise ValueError(f"{text!r}: a shard is I/N with 1 <= I <= N")
    return i, n


def shard_cells(cells: tuple[Cell, ...], index: int, count: int) -> tuple[Cell, ...]:
    """Shard ``index`` of ``count`` (1-based): every count-th cell of the plan's order.

    Dealing cells out in turn spreads each topology's (and so each boot
    time's) cells over every shard.
    """
    return tuple(c for i, c in enumerate(cells) if i % count == index - 1)
