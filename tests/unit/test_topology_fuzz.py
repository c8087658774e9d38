"""No input, however broken, makes topology loading raise anything but
TopologyError (which the CLI prints as FILE:LINE:COL lines)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxlrig.topology import TopologyError, loads

from ..conftest import TOPOLOGIES

VALID = [yaml.safe_load(p.read_text()) for p in TOPOLOGIES]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["256M", "4G", "1K", "0", "hb0", "rp0", "sw0", "mem0", "ram", "pmem",
                     "-1G", "1.5G", "256MiB", "movable", "tcg"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _check(text: str) -> None:
    try:
        topo = loads(text, "fuzz.yaml")
    except TopologyError as exc:
        assert exc.problems, "an error must say what is wrong"
        for p in exc.problems:
            assert p.file == "fuzz.yaml" and p.line >= 1 and p.col >= 1 and p.message
    else:
        assert topo.name


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> str:
    import copy

    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        else:
            parent.append(draw(values))
    return yaml.safe_dump(doc, sort_keys=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_topologies_never_traceback(text: str) -> None:
    _check(text)


@settings(max_examples=200, deadline=None)
@given(values)
def test_arbitrary_documents_never_traceback(data: Any) -> None:
    _check(yaml.safe_dump(data))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_traceback(text: str) -> None:
    _check(text)


def test_recursive_alias_is_an_error() -> None:
    try:
        loads("name: &a [*a]\n", "x.yaml")
    except TopologyError as exc:
        assert "x.yaml:" in str(exc)
    else:
        raise AssertionError("a recursive document must be refused")
