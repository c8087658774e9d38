"""No input, however broken, makes scenario loading raise anything but
ScenarioError, and its every problem is located (FILE:LINE:COL)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxlrig.scenario.model import ScenarioError, ScenarioSpec, load_scenario
from cxlrig.topology.yamlmarks import Problem

from ..conftest import REPO

VALID = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "scenarios").glob("*.yaml"))]
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

odd_text = st.one_of(
    st.text(max_size=12),
    # Controls, bidi marks, a BOM, line and paragraph separators, astral planes.
    st.text(st.sampled_from("\x00\x07\x1b\x7f\x85\xa0\u200b\u202e\u2028\u2029\ufeff"
                            "\U0001f600\U000e0001"), max_size=6),
    st.sampled_from(["${cxl_node}", "${a.pages[0].pa}", "${", "}", "v1", "v2", "debug", "all",
                     "root", "user", "phys", "virt", "2001-13-45", "0x1g", "1e999", ".nan",
                     "~", "<<", "run", "mark", "steps", "a", "*a", "&a"]))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=True), odd_text)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)),
    max_leaves=12)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A value nested past (or up to) the depth limit."""
    value: Any = draw(scalars)
    for _ in range(draw(st.integers(1, 80))):
        value = {draw(odd_text): value} if draw(st.booleans()) else [value]
    return value


@st.composite
def shared(draw: st.DrawFn) -> Any:
    """One object used many times over, which the dumper writes as aliases."""
    value: Any = draw(values)
    for _ in range(draw(st.integers(1, 6))):
        value = [value] * draw(st.integers(1, 9))
    return value


def _paths(data: Any, prefix: tuple[Any, ...] = (),
           seen: set[int] | None = None) -> list[tuple[Any, ...]]:
    """Each place in ``data``, an object used many times entered once."""
    seen = set() if seen is None else seen
    out = [prefix]
    if isinstance(data, dict | list) and id(data) not in seen:
        seen.add(id(data))
        items = data.items() if isinstance(data, dict) else enumerate(data)
        for k, v in items:
            out += _paths(v, (*prefix, k), seen)
    return out


@st.composite
def mutated(draw: st.DrawFn) -> str:
    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add", "deep", "share", "alias"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "deep":
            parent[path[-1]] = draw(deep())
        elif action == "share":
            parent[path[-1]] = draw(shared())
        elif action == "alias":
            # The same object at two places: an anchor and an alias to it.
            other = draw(st.sampled_from(paths))
            target = doc
            for part in other:
                target = target[part]
            parent[path[-1]] = target
        elif isinstance(parent, dict):
            parent[draw(odd_text)] = draw(values)
        else:
            parent.append(draw(values))
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()))
    except (yaml.representer.RepresenterError, RecursionError):
        # An object made to contain itself, which the dumper cannot write.
        return "name: x\n"


# Pieces of YAML syntax, so that random text reaches past the first token.
TOKENS = ["name: x\n", "title: t\n", "point: p\n", "steps:\n", "  - ", "run: ", "mark: m",
          "id: a", "expect:\n", "  all:\n", "    - {step: a, equals: 1}\n", "variants: ",
          "[", "]", "{", "}", ", ", ": ", "? ", "- ", "\n", "  ", "\t", "'", '"', "\\",
          "&a ", "*a", "&b ", "*b", "<<: ", "!!int ", "!!str ", "!!binary ", "!!timestamp ",
          "!foo ", "|\n", ">-\n", "# c\n", "---\n", "...\n", "%YAML 1.1\n", "%TAG ! !x\n",
          "\ufeff", "\x00", "\r\n", "2001-13-45", "0o17", "1_000", ".inf", "null", "~"]
yamlish = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"


def _check(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    try:
        spec, _ = load_scenario(path)
    except ScenarioError as exc:
        assert exc.problems, "an error must say what is wrong"
        for p in exc.problems:
            assert isinstance(p, Problem)
            assert p.file == str(path) and p.line >= 1 and p.col >= 1 and p.message
    else:
        assert isinstance(spec, ScenarioSpec)


@settings(FUZZ, max_examples=400)
@given(text=mutated())
def test_mutated_scenarios_never_traceback(scenario_file: Path, text: str) -> None:
    _check(scenario_file, text)


@settings(FUZZ, max_examples=200)
@given(data=st.one_of(values, deep(), shared()))
def test_arbitrary_documents_never_traceback(scenario_file: Path, data: Any) -> None:
    _check(scenario_file, yaml.safe_dump(data))


@settings(FUZZ, max_examples=300)
@given(text=yamlish)
def test_yaml_like_text_never_tracebacks(scenario_file: Path, text: str) -> None:
    _check(scenario_file, text)


@settings(FUZZ, max_examples=200)
@given(text=st.text(max_size=200))
def test_arbitrary_text_never_tracebacks(scenario_file: Path, text: str) -> None:
    _check(scenario_file, text)
