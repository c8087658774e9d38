"""The argument builder: golden files for every shipped topology, and units.

Regenerate the golden files after an intended change with
``CXLRIG_REGEN_GOLDEN=1 make unit`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

import pytest

from cxlrig.qemu.args import (
    Plugin,
    QemuOptions,
    build_argv,
    cpu_ranges,
    escape,
    format_argv,
    group_options,
    size_arg,
)
from cxlrig.topology import load, loads

from ..conftest import REPO, TOPOLOGIES

GOLDEN = REPO / "tests" / "golden"
OPTS = QemuOptions(qmp_socket=PurePath("RUN/qmp.sock"),
                   console_log=PurePath("RUN/console.log"),
                   shell_socket=PurePath("RUN/shell.sock"),
                   shell_log=PurePath("RUN/shell.log"), cdat_dir=PurePath("RUN"))


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_golden_argv(path: Path) -> None:
    text = format_argv(build_argv(load(path), OPTS))
    golden = GOLDEN / f"{path.stem}.args"
    if os.environ.get("CXLRIG_REGEN_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}: run with CXLRIG_REGEN_GOLDEN=1"
    assert text == golden.read_text()


def test_every_golden_file_has_a_topology() -> None:
    assert {g.stem for g in GOLDEN.glob("*.args")} == {t.stem for t in TOPOLOGIES}


def test_at_least_eight_topologies_and_a_default() -> None:
    assert len(TOPOLOGIES) >= 8
    assert REPO / "topologies" / "default.yaml" in TOPOLOGIES


def test_plugin_forces_single_thread_and_escapes_commas() -> None:
    topo = load(REPO / "topologies" / "default.yaml")
    opts = QemuOptions(single_thread=True,
                       plugin=Plugin(PurePath("/p/lib,x.so"), (("out", "/tmp/a,b"),)))
    argv = build_argv(topo, opts)
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    assert argv[argv.index("-plugin") + 1] == "/p/lib,,x.so,out=/tmp/a,,b"
    with pytest.raises(ValueError, match="TCG"):
        build_argv(topo, QemuOptions(accel="kvm", plugin=Plugin(PurePath("/p.so"))))


def test_kernel_and_append_are_single_tokens() -> None:
    topo = load(REPO / "topologies" / "default.yaml")
    argv = build_argv(topo, QemuOptions(kernel=PurePath("/k/bzImage"),
                                        initrd=PurePath("/k/initrd"),
                                        append="console=ttyS0 quiet"))
    assert argv[argv.index("-append") + 1] == "console=ttyS0 quiet"
    assert argv[argv.index("-initrd") + 1] == "/k/initrd"


def test_numa_nodes_without_cpus_and_split_ranges() -> None:
    topo = loads("""
name: t
machine:
  cpus: 4
  nodes:
    - {memory: 512M, cpus: [0, 1, 3]}
    - {memory: 256M, cpus: [2]}
    - {memory: 128M, cpus: []}
""")
    argv = build_argv(topo, QemuOptions())
    numa = [argv[i + 1] for i, t in enumerate(argv) if t == "-numa"]
    assert numa == ["node,nodeid=0,memdev=ram-node0,cpus=0-1,cpus=3",
                    "node,nodeid=1,memdev=ram-node1,cpus=2",
                    "node,nodeid=2,memdev=ram-node2"]
    assert argv[argv.index("-m") + 1] == "896M"
    assert "cxl=on" not in " ".join(argv)


def test_units() -> None:
    assert cpu_ranges([5, 0, 1, 2]) == ["0-2", "5"]
    assert cpu_ranges([]) == []
    assert size_arg(256 << 20) == "256M" and size_arg(4 << 30) == "4G"
    assert size_arg(1000) == "1000" and size_arg(4096) == "4k"
    assert escape("a,b,,c") == "a,,b,,,,c"
    assert group_options(["q", "-a", "1", "-S", "-b", "x"]) == [["q"], ["-a", "1"], ["-S"],
                                                                  ["-b", "x"]]
    assert format_argv(["q", "-append", "a b"]) == "q \\\n    -append 'a b'\n"
