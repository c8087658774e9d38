"""What the plugin tests without a guest kernel share."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxlrig.machine.runner import Machine, RunDir
from cxlrig.plugin import build_plugin
from cxlrig.qemu.args import QemuOptions
from cxlrig.qemu.mtree import MemoryLayout, parse_mtree
from cxlrig.topology import Topology

#: SeaBIOS runs about 7 million instructions, a fraction of a second of TCG;
#: nothing depends on it having finished, a slice of it only needs accesses.
FIRMWARE_S = 1.0


@pytest.fixture(scope="module")
def lib() -> Path:
    return build_plugin()


def paused_layout(topo: Topology, root: Path) -> MemoryLayout:
    """QEMU's own layout of ``topo``'s memory, read from the machine started paused."""
    with Machine(topo, QemuOptions(paused=True), RunDir.create(root, "mtree")) as machine:
        return parse_mtree(machine.hmp("info mtree -f"))
