"""Hostile YAML is refused with a located message, in little memory, never a traceback.

Each input goes to the loaders in this process, with peak memory measured by
tracemalloc, and to the CLI in a subprocess whose CPU time and address space
are capped by rlimits, so that a regression fails instead of taking the
machine. Nothing here asserts on time: machines differ too much for that.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cxlrig.scenario.model import ScenarioError, load_scenario
from cxlrig.topology import TopologyError, load, loads
from cxlrig.topology.yamlmarks import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    Problem,
    YamlLoadError,
    load_located,
    read_located,
)

from ..conftest import REPO

# A regression that loops in this process fails here rather than hangs.
pytestmark = pytest.mark.timeout(120)

PEAK_BYTES = 100 * 1024 * 1024
CPU_SECONDS = 10
ADDRESS_SPACE = 1 << 30

TOPOLOGY = (REPO / "topologies" / "default.yaml").read_text()
SCENARIO = """\
name: hostile
title: t
point: p
steps:
  - id: a
    run: 'true'
"""


def bomb_lines() -> str:
    """The 324-byte file that expanded to 9**9 nodes: nine levels of nine aliases."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for p, n in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]")
    return "\n".join(lines) + "\n"


def bomb_flow() -> str:
    """The same bomb as one flow sequence, to hide in any value."""
    levels = ["&a [" + ",".join(["x"] * 9) + "]"]
    for p, n in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"&{n} [{','.join([f'*{p}'] * 9)}]")
    return "[" + ", ".join(levels) + "]"


def map_bomb() -> str:
    lines = ["a: &a {" + ", ".join(f"k{i}: x" for i in range(9)) + "}"]
    for p, n in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{n}: &{n} {{" + ", ".join(f"k{i}: *{p}" for i in range(9)) + "}")
    return "\n".join(lines) + "\n"


def block_map(levels: int) -> str:
    return "".join(" " * i + "a:\n" for i in range(levels - 1)) + " " * (levels - 1) + "a: x\n"


def oversize(text: str) -> str:
    """``text`` padded with a comment to one byte over the limit."""
    pad = MAX_FILE_BYTES + 1 - len(text.encode()) - 3
    return text + "# " + "p" * pad + "\n"


@dataclass(frozen=True)
class Case:
    text: str
    word: str  # what the message must say
    where: str | None = None  # the exact LINE:COL, where it is worth pinning


TOPOLOGY_CASES = {
    # Refused at the first *d, where the document reaches 15,690 nodes.
    "bomb": Case(bomb_lines(), "alias", "5:8"),
    "bomb-in-description": Case(
        re.sub(r"^description: .*$", f"description: {bomb_flow()}", TOPOLOGY, flags=re.M),
        "alias"),
    "bomb-in-devices": Case(
        TOPOLOGY.replace("      volatile: 256M\n", f"      volatile: {bomb_flow()}\n", 1),
        "alias"),
    "bomb-of-mappings": Case(map_bomb(), "alias"),
    "bomb-as-mapping-key": Case(bomb_lines() + "? *i\n: 1\n", "alias"),
    "bomb-as-merge-key": Case(bomb_lines() + "j: {<<: *i}\n", "alias"),
    "recursive-sequence": Case("name: &a [x, *a]\n", "recursive alias", "1:14"),
    "recursive-mapping": Case("name: &a {b: {c: *a}}\n", "recursive alias", "1:18"),
    "deep-flow-sequence": Case("[" * 20_000 + "]" * 20_000, "nesting", f"1:{MAX_DEPTH + 1}"),
    # Three characters a level: 15,000 is as deep as fits under the size limit.
    "deep-flow-mapping": Case("{a:" * 15_000 + "}" * 15_000, "nesting"),
    "deep-block-sequence": Case("- " * 20_000 + "x\n", "nesting", f"1:{2 * MAX_DEPTH + 1}"),
    # Block mappings indent a column a level, so deep ones grow as the square.
    "deep-block-mapping": Case(block_map(MAX_DEPTH + 1), "nesting",
                               f"{MAX_DEPTH + 1}:{MAX_DEPTH + 1}"),
    "deep-in-a-value": Case(TOPOLOGY.replace("cpus: 2", "cpus: " + "[" * 20_000), "nesting"),
    "oversize": Case(oversize(TOPOLOGY), "size", "1:1"),
}

SCENARIO_CASES = {
    "bomb-in-run": Case(SCENARIO.replace("run: 'true'", f"run: {bomb_flow()}"), "alias"),
    "bomb-in-expect": Case(
        SCENARIO + f"expect:\n  all:\n    - {{step: a, field: x, equals: {bomb_flow()}}}\n",
        "alias"),
    "recursive-step": Case(SCENARIO.replace("  - id: a", "  - &s\n    id: a\n    next: *s"),
                           "recursive alias", "7:11"),
    "deep-run": Case(SCENARIO.replace("run: 'true'", "run: " + "[" * 20_000), "nesting"),
    "deep-block-steps": Case(SCENARIO + "  - " + "- " * 20_000 + "x\n", "nesting"),
    "oversize": Case(oversize(SCENARIO), "size", "1:1"),
}


def _write(tmp: Path, cases: dict[str, Case]) -> dict[str, Path]:
    paths = {}
    for name, case in cases.items():
        paths[name] = tmp / f"{name}.yaml"
        paths[name].write_text(case.text)
    return paths


def _check_problems(problems: list[Problem], path: Path, case: Case) -> None:
    assert problems
    first = problems[0]
    assert first.file == str(path) and first.line >= 1 and first.col >= 1
    assert case.word in first.message, first
    if case.where is not None:
        assert f"{first.line}:{first.col}" == case.where, first


def _peak(call: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """What ``call`` raised, and the most memory it held at once."""
    tracemalloc.start()
    try:
        call()
    except Exception as exc:
        return exc, tracemalloc.get_traced_memory()[1]
    else:
        return None, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_bomb_is_the_one_reported() -> None:
    text = bomb_lines()
    assert len(text.encode()) < 400 and text.count("*") == 72


@pytest.mark.parametrize("name", list(TOPOLOGY_CASES))
def test_topology_load_refuses(tmp_path: Path, name: str) -> None:
    case = TOPOLOGY_CASES[name]
    path = _write(tmp_path, {name: case})[name]
    raised, peak = _peak(lambda: load(path))
    assert isinstance(raised, TopologyError), raised
    _check_problems(raised.problems, path, case)
    assert peak < PEAK_BYTES


@pytest.mark.parametrize("name", list(SCENARIO_CASES))
def test_scenario_load_refuses(tmp_path: Path, name: str) -> None:
    case = SCENARIO_CASES[name]
    path = _write(tmp_path, {name: case})[name]
    raised, peak = _peak(lambda: load_scenario(path))
    assert isinstance(raised, ScenarioError), raised
    _check_problems(raised.problems, path, case)
    assert peak < PEAK_BYTES


@pytest.mark.parametrize("name", [*(f"topology/{n}" for n in TOPOLOGY_CASES),
                                  *(f"scenario/{n}" for n in SCENARIO_CASES)])
@pytest.mark.parametrize("reader", ["read_located", "load_located"])
def test_yamlmarks_refuses(tmp_path: Path, name: str, reader: str) -> None:
    kind, short = name.split("/")
    case = (TOPOLOGY_CASES if kind == "topology" else SCENARIO_CASES)[short]
    path = _write(tmp_path, {short: case})[short]
    if reader == "read_located":
        raised, peak = _peak(lambda: read_located(path))
    else:
        raised, peak = _peak(lambda: load_located(case.text, str(path)))
    assert isinstance(raised, YamlLoadError), raised
    _check_problems(raised.problems, path, case)
    assert peak < PEAK_BYTES


# -- the CLI, in a capped subprocess -----------------------------------------------


def _caps() -> None:
    # Over these the kernel kills the child: a hang or a blow-up fails the test.
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _cxlrig(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("cxlrig")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "cxlrig.cli"]
    env = {**os.environ, "CXLRIG_RUNS": str(tmp / "runs"), "CXLRIG_CACHE": str(tmp / "cache")}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=env, preexec_fn=_caps, cwd=tmp)


@dataclass(frozen=True)
class CliRun:
    proc: subprocess.CompletedProcess[str]
    paths: dict[str, Path]
    tmp: Path


def _line_for(run: CliRun, name: str) -> str:
    prefix = f"{run.paths[name]}:"
    lines = [line for line in run.proc.stdout.splitlines() if line.startswith(prefix)]
    assert lines, f"nothing about {name} in:\n{run.proc.stdout}\n{run.proc.stderr}"
    return lines[0]


# One process per command for all the files: the CLI reads each file before
# doing anything else, and says what is wrong with each.
@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    tmp = tmp_path_factory.mktemp("validate")
    paths = _write(tmp, TOPOLOGY_CASES)
    return CliRun(_cxlrig(["validate", *map(str, paths.values())], tmp), paths, tmp)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    tmp = tmp_path_factory.mktemp("run")
    paths = _write(tmp, SCENARIO_CASES)
    return CliRun(_cxlrig(["run", *map(str, paths.values())], tmp), paths, tmp)


def _check_cli(run: CliRun, name: str, case: Case) -> None:
    assert run.proc.returncode == 1, run.proc.stderr
    assert "Traceback" not in run.proc.stdout + run.proc.stderr
    line = _line_for(run, name)
    where = case.where or r"\d+:\d+"
    assert re.match(re.escape(str(run.paths[name])) + f":{where}: .*{case.word}", line), line


@pytest.mark.parametrize("name", list(TOPOLOGY_CASES))
def test_cli_validate_refuses(validated: CliRun, name: str) -> None:
    _check_cli(validated, name, TOPOLOGY_CASES[name])


@pytest.mark.parametrize("name", list(SCENARIO_CASES))
def test_cli_run_refuses(ran: CliRun, name: str) -> None:
    _check_cli(ran, name, SCENARIO_CASES[name])


def test_cli_run_stops_before_building_anything(ran: CliRun) -> None:
    cache = ran.tmp / "cache"
    assert not (ran.tmp / "runs").exists()
    assert not cache.exists() or not any(cache.iterdir())


# -- where the limits are ----------------------------------------------------------


def _aliases(scalars_first: int, uses: int) -> str:
    # 5 nodes (root, two keys, two sequences) + 99 scalars + the scalars
    # before the aliases + 100 nodes at each use of *a.
    return ("a: &a [" + ",".join(["x"] * 99) + "]\n"
            "b: [" + ",".join(["y"] * scalars_first + ["*a"] * uses) + "]\n")


def test_expansion_up_to_the_limit_is_accepted() -> None:
    uses = (MAX_NODES - 104) // 100
    at_limit = _aliases(MAX_NODES - 104 - 100 * uses, uses)
    data = load_located(at_limit, "x.yaml").data
    assert len(data["b"]) == MAX_NODES - 104 - 100 * uses + uses


def test_expansion_one_past_the_limit_is_refused_at_the_alias() -> None:
    uses = (MAX_NODES - 104) // 100
    text = _aliases(MAX_NODES - 104 - 100 * uses + 1, uses)
    with pytest.raises(YamlLoadError) as info:
        load_located(text, "x.yaml")
    (p,) = info.value.problems
    items = MAX_NODES - 104 - 100 * uses + 1 + uses
    col = text.splitlines()[1].rindex("*a") + 1
    assert (p.line, p.col, p.path) == (2, col, f"b[{items - 1}]")
    assert p.message == f"YAML: alias *a makes the document expand past {MAX_NODES} nodes " \
        "(the limit)"


@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_up_to_the_limit_is_accepted(style: str) -> None:
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH if style == "flow" else block_map(MAX_DEPTH)
    load_located(text, "x.yaml")


@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_one_past_the_limit_is_refused(style: str) -> None:
    depth = MAX_DEPTH + 1
    text = "[" * depth + "]" * depth if style == "flow" else block_map(depth)
    with pytest.raises(YamlLoadError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        load_located(text, "x.yaml")


def test_a_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    text = "a: 1\n"
    path.write_text(text + "#" * (MAX_FILE_BYTES - len(text) - 1) + "\n")
    assert read_located(path).data == {"a": 1}


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(1 << 30)  # sparse: a gigabyte that takes no disk
    raised, peak = _peak(lambda: read_located(path))
    assert isinstance(raised, YamlLoadError)
    assert str(raised) == f"{path}:1:1: file size {1 << 30} bytes is over the limit of " \
        f"{MAX_FILE_BYTES} bytes ({MAX_FILE_BYTES // 1024} KiB)"
    assert peak < 4 * MAX_FILE_BYTES


def test_an_endless_device_is_refused() -> None:
    with pytest.raises(YamlLoadError, match=r"^/dev/zero:1:1: file size more than \d+ bytes"):
        read_located("/dev/zero")


def test_a_long_text_is_refused_before_parsing() -> None:
    with pytest.raises(YamlLoadError, match=r"^x\.yaml:1:1: text size \d+ characters is over"):
        load_located("[" * (MAX_FILE_BYTES + 1), "x.yaml")


# -- read_located does what the loaders did with a file ------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(YamlLoadError) as info:
        read_located(path)
    assert info.value.problems == [
        Problem(str(path), 1, 1, "", "cannot read: No such file or directory")]


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(YamlLoadError) as info:
        read_located(tmp_path)
    assert info.value.problems == [Problem(str(tmp_path), 1, 1, "", "cannot read: Is a directory")]


def test_not_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: x\ndescription: caf\u00e9 \u00e9t\u00e9\n".encode("latin-1"))
    with pytest.raises(YamlLoadError) as info:
        read_located(path)
    assert info.value.problems == [
        Problem(str(path), 2, 17, "", "not UTF-8 text: invalid continuation byte")]


def test_scenario_not_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(SCENARIO.replace("title: t", "title: caf\u00e9").encode("latin-1"))
    with pytest.raises(ScenarioError, match=r"latin1\.yaml:2:11: not UTF-8 text"):
        load_scenario(path)


def test_newlines_are_read_as_read_text_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "crlf.yaml"
    path.write_bytes(b"a: |\r\n  one\r\n  two\rb: [1,\r\n 2]\r\n")
    doc = read_located(path)
    same = load_located(path.read_text(encoding="utf-8"), str(path))
    assert doc.data == same.data == {"a": "one\ntwo\n", "b": [1, 2]}
    assert doc.marks == same.marks


# -- scalars the safe constructor cannot make ---------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("name: 2001-13-45\n", "1:7: name: YAML: '2001-13-45' is not a valid timestamp "
     "(month must be in 1..12)"),
    ("name: !!int abc\n", "1:7: name: YAML: 'abc' is not a valid int"),
    ("name: !!float x\n", "1:7: name: YAML: 'x' is not a valid float"),
    ("name: !!timestamp x\n", "1:7: name: YAML: 'x' is not a valid timestamp"),
    ("name: !!bool maybe\n", "1:7: name: YAML: 'maybe' is not a valid bool"),
    ("name: " + "1" * 5000 + "\n", "1:7: name: YAML: '1111111111111111111111111111111111111"
     "'... is not a valid int (Exceeds the limit (4300 digits) for integer string conversion"),
    ("? !!map x\n: 1\n", "1:3: YAML: expected a mapping node, but found scalar"),
    ("2001-02-30: 1\n", "1:1: YAML: '2001-02-30' is not a valid timestamp"),
])
def test_bad_scalars_are_located(text: str, message: str) -> None:
    with pytest.raises(TopologyError) as info:
        loads(text, "x.yaml")
    assert str(info.value.problems[0]).startswith(f"x.yaml:{message}")
