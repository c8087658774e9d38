"""Matrix files: every shipped one plans; bad ones get located errors; shards partition."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxlrig.cli import main
from cxlrig.matrix.model import MatrixError, load_matrix, parse_shard, shard_cells
from cxlrig.matrix.record import Cell
from cxlrig.scenario.model import load_scenario
from cxlrig.topology import load

from ..conftest import REPO

MATRICES = sorted((REPO / "matrices").glob("*.yaml"))
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
TOPOLOGIES = sorted((REPO / "topologies").glob("*.yaml"))


@pytest.mark.parametrize("path", MATRICES, ids=lambda p: p.stem)
def test_shipped_matrices_plan(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = load_matrix(path)
    keys = [c.key for c in plan.cells]
    assert len(keys) == len(set(keys)) > 0
    assert main(["matrix", "list", str(path)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == keys


def test_nightly_covers_every_topology_variant_and_scenario() -> None:
    plan = load_matrix(REPO / "matrices" / "nightly.yaml")
    assert {c.topology for c in plan.cells} == {load(p).name for p in TOPOLOGIES}
    assert {c.variant for c in plan.cells} == {"v1", "v2"}
    assert {c.scenario for c in plan.cells} == {load_scenario(p)[0].name for p in SCENARIOS}
    # Only the exclusions the file states (the selftests run on small machines
    # whose node 1 is the CXL node) drop cells from the cross product.
    excluded = {c.topology for c in plan.cells if c.scenario == "mm-selftests"}
    assert {load(p).name for p in TOPOLOGIES} - excluded == {
        "numa-dram2-cxl", "tiered-dram3-cxl", "large", "direct-volatile", "dynamic-capacity"}
    assert len(plan.cells) == len(TOPOLOGIES) * 2 * len(SCENARIOS) - 5 * 2
    # Every topology gets its bring-up check, and bring-up applies everywhere.
    for topo in plan.topologies.values():
        assert plan.scenarios["bring-up"].unmet(topo) == []


def test_requirements_decide_skips() -> None:
    plan = load_matrix(REPO / "matrices" / "nightly.yaml")
    dev = plan.scenarios["device-memory"]
    assert dev.unmet(plan.topologies["devdax"]) == []
    assert dev.unmet(plan.topologies["default"]) == ["needs a device-dax region, has none"]
    mig = plan.scenarios["migration-cost"]
    assert mig.unmet(plan.topologies["default"]) == []
    assert mig.unmet(plan.topologies["persistent-lsa"]) == [
        "needs 1 ram region(s) onlined as a node, has 0"]
    # A plugin scenario needs TCG: a topology that insists on KVM lacks it.
    promo = plan.scenarios["promotion-loop-phys"]
    kvm_only = plan.topologies["default"].__class__(
        **{**plan.topologies["default"].__dict__, "accel": "kvm", "_by_id": {}})
    assert "needs the TCG plugin, the topology asks for KVM" in promo.unmet(kvm_only)


def _matrix(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize(("body", "message"), [
    ("name: m\ntopologies: [default]\nscenarios: [bring-up]\nretry: 2\n",
     "m.yaml:4:1: retry: unknown key (allowed here: name, description, topologies, "
     "variants, scenarios, include, exclude, retries, timeout, files)"),
    ("name: m\ntopologies: [nosuch]\nscenarios: [bring-up]\n",
     "m.yaml:2:14: topologies[0]: 'nosuch' names no topology file"),
    ("name: m\ntopologies: [default]\nscenarios: [tag:nosuch]\n",
     "m.yaml:3:13: scenarios[0]: no shipped scenario has the tag 'nosuch'"),
    ("name: m\ntopologies: [default]\nscenarios: [bring-up]\nvariants: [v9]\n",
     "m.yaml:4:12: variants[0]"),
    ("name: m\ntopologies: [default]\nscenarios: [bring-up]\n"
     "exclude:\n  - {topology: nosuch}\n",
     "m.yaml:5:6: exclude[0].topology: 'nosuch' matches no topology of this matrix"),
    ("name: m\ntopologies: [default]\nscenarios: [bring-up]\nexclude:\n  - {scenario: '*'}\n",
     "m.yaml:1:1: the matrix has no cells"),
    ("name: m\ntopologies: [default]\nscenarios: [bring-up]\n"
     "variants: [{name: mine, like: v2, kernel: /nonexistent/bzImage}]\n",
     "m.yaml:4:35: variants[0].kernel: /nonexistent/bzImage: no such file"),
    ("name: m\ntopologies: [default]\nscenarios: [bring-up]\n"
     "variants: [{name: mine, like: v2, kernel: /bin/sh, series: /tmp}]\n",
     "m.yaml:4:12: variants[0]: a variant with a kernel is booted as it is: it takes no "
     "series"),
    ("name: m\ntopologies: [default]\nscenarios: [bring-up]\ntimeout: -1\n",
     "m.yaml:4:1: timeout: must be greater than 0"),
    ("name: m\ntopologies: [default]\nscenarios: [bring-up]\nretries: &a [*a]\n",
     "m.yaml:4"),
])
def test_bad_matrix_is_located(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               body: str, message: str) -> None:
    path = _matrix(tmp_path, body)
    assert main(["matrix", "list", str(path)]) == 1
    got = capsys.readouterr()
    assert "Traceback" not in got.out + got.err
    lines = got.out.splitlines()
    assert lines, got.err
    assert any(line.startswith(str(tmp_path / message.split(":", 1)[0]) + ":" +
                               message.split(":", 1)[1]) for line in lines), lines


def test_paths_and_globs_resolve_relative_to_the_matrix(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    topo = (REPO / "topologies" / "default.yaml").read_text().replace(
        "name: default", "name: mine-default")
    (tmp_path / "mine" / "t.yaml").write_text(topo)
    path = _matrix(tmp_path, """\
        name: m
        topologies: ["mine/*.yaml", direct-volatile]
        variants: [v1, {name: again, like: v2}]
        scenarios: ["promotion-*", tag:bring-up]
        include:
          - {variant: again}
    """)
    plan = load_matrix(path)
    assert [c.key for c in plan.cells] == [
        "direct-volatile/again/bring-up", "direct-volatile/again/promotion-loop-phys",
        "direct-volatile/again/promotion-loop-virt", "mine-default/again/bring-up",
        "mine-default/again/promotion-loop-phys", "mine-default/again/promotion-loop-virt"]
    assert plan.variant("again").like == "v2"


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2"])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="I/N"):
        parse_shard(text)


@given(st.integers(1, 300), st.integers(1, 40))
def test_shards_partition_the_cells(total: int, count: int) -> None:
    cells = tuple(Cell(key=f"t/v/s{i}", scenario=f"s{i}", topology="t", variant="v")
                  for i in range(total))
    shards = [shard_cells(cells, i, count) for i in range(1, count + 1)]
    flat = [c.key for s in shards for c in s]
    assert sorted(flat) == sorted(c.key for c in cells)
    assert len(flat) == len(set(flat))
    # Balanced: no shard has more than one cell more than another.
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert shards == [shard_cells(cells, i, count) for i in range(1, count + 1)]


def test_matrix_files_are_relative_to_the_matrix(tmp_path: Path) -> None:
    (tmp_path / "t.sh").write_text("#!/bin/sh\n")
    path = tmp_path / "m.yaml"
    path.write_text("name: m\ntopologies: [default]\nscenarios: [bring-up]\n"
                    "files: [t.sh, 'gone:/opt/g']\n")
    with pytest.raises(MatrixError) as exc:
        load_matrix(path)
    assert str(exc.value).endswith(f"m.yaml:4:15: files[1]: {tmp_path}/gone: "
                                   "no such file or directory"), str(exc.value)
    path.write_text("name: m\ntopologies: [default]\nscenarios: [bring-up]\nfiles: [t.sh]\n")
    assert load_matrix(path).spec.files == [f"{tmp_path}/t.sh:/opt/t.sh"]


def test_a_series_on_a_tree_is_one_variant(tmp_path: Path) -> None:
    """tree + series: the series applied to a copy of the tree (kernel build does it)."""
    (tmp_path / "linux").mkdir()
    (tmp_path / "mine").mkdir()
    path = _matrix(tmp_path, "name: m\ntopologies: [default]\nscenarios: [bring-up]\n"
                   "variants: [{name: mine, like: v2, tree: linux, series: mine}]\n")
    assert main(["matrix", "list", str(path)]) == 0
