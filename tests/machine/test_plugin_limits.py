"""The plugin's limits, as its ``limits`` command reports them, against the Python copies.

orchestrator/cxlrig/plugin/addrmap.py checks arguments with its own copies
of the plugin's limits so that mistakes surface before QEMU starts; this
test holds every copy equal to what a freshly built plugin answers. The
machine stays paused: no firmware needs to run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxlrig.machine.runner import Machine, RunDir
from cxlrig.plugin import Control, ControlError, build_plugin
from cxlrig.plugin.addrmap import (
    DELAY_MIN_NS,
    MAX_CONTROL_LINE,
    MAX_CONTROL_PATH,
    MAX_FLUSH_S,
    MAX_LATENCY_NS,
    MAX_NAME,
    MAX_NODE_ID,
    MAX_SAMPLE,
    PAGE,
)
from cxlrig.plugin.results import FORMAT
from cxlrig.qemu.args import Plugin, QemuOptions
from cxlrig.topology import load
from cxlrig.topology.model import LEGAL_GRANULARITY, LEGAL_WAYS

from ..conftest import REPO

pytestmark = pytest.mark.qemu


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # UNIX socket paths are short: keep them out of pytest's deep tmp paths.
    path = Path(tempfile.mkdtemp(prefix="cxlrig-t-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_limits_agree_with_the_python_copies(tmp_path: Path, sockdir: Path) -> None:
    topo = load(REPO / "topologies" / "default.yaml")
    run = RunDir.create(tmp_path, "limits")
    ctl = sockdir / "c.sock"
    args = (("out", str(run.path / "plugin.json")), ("control", str(ctl)))
    opts = QemuOptions(accel="tcg", single_thread=True, paused=True,
                       plugin=Plugin(build_plugin(), args))
    with Machine(topo, opts, run), Control(ctl) as c:
        limits = c.limits()
        ping = c.ping()
        # The longest line the client lets through is one the plugin reads whole.
        with pytest.raises(ControlError, match="unknown command"):
            c.command("x" * MAX_CONTROL_LINE)
        assert c.ping() == ping

    assert limits["plugin"] == "cxlrig-mem"
    assert ping == f"{limits['plugin']} {limits['version']}"
    assert limits["api_version"] == 4
    assert limits["output_format"] == FORMAT
    assert limits["max_node_id"] == MAX_NODE_ID
    assert limits["max_lat_ns"] == MAX_LATENCY_NS
    assert limits["max_sample"] == MAX_SAMPLE
    assert limits["max_name"] == MAX_NAME
    assert limits["page_size"] == PAGE
    assert limits["max_flush_s"] == MAX_FLUSH_S
    assert limits["max_control_path"] == MAX_CONTROL_PATH
    assert limits["control_line"] == MAX_CONTROL_LINE
    assert limits["delay_min_ns"] == DELAY_MIN_NS
    assert limits["max_ways"] == max(LEGAL_WAYS)
    assert (limits["min_granularity"], limits["max_granularity"]) == \
        (min(LEGAL_GRANULARITY), max(LEGAL_GRANULARITY))
    # Limits no Python code checks yet: present, and sane.
    for key in ("max_nodes", "max_regions", "max_devs", "max_pages", "tick_insns",
                "control_clients"):
        value = limits[key]
        assert isinstance(value, int) and value > 0, (key, value)
