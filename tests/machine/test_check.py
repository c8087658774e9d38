"""`cxlrig check` against real QEMU (paused, no guest kernel): every shipped
topology matches, and a machine that differs from its file is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxlrig.cli import main
from cxlrig.machine.check import check_topology
from cxlrig.machine.runner import LaunchError, Machine, RunDir
from cxlrig.qemu.args import QemuOptions
from cxlrig.topology import load

from ..conftest import REPO, TOPOLOGIES
from .procs import alive

pytestmark = pytest.mark.qemu


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_check_passes_for_every_topology(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    topo = load(path)
    assert "machine matches the topology" in out
    for dev in topo.devices:
        # A device absent at boot (hotplug) must not be there; the others must.
        assert (f"{dev.id} (cxl-type3)" in out) == dev.present


def _drop_device(argv: list[str], dev: str) -> list[str]:
    out: list[str] = []
    skip = False
    for tok in argv:
        if skip:
            skip = False
            continue
        if tok == "-device":
            out.append(tok)
            continue
        if out and out[-1] == "-device" and f",id={dev}," in tok:
            out.pop()
            continue
        out.append(tok)
    return out


def test_check_fails_when_a_device_is_missing(tmp_path: Path) -> None:
    topo = load(REPO / "topologies" / "default.yaml")
    report = check_topology(topo, RunDir.create(tmp_path, "t"),
                            argv_hook=lambda a: _drop_device(a, "mem1"))
    assert not report.ok
    assert "cxl-type3 'mem1': missing (expected under 'sw0.dsp1')" in report.mismatches


def test_check_fails_on_wrong_capacity_and_parent(tmp_path: Path) -> None:
    topo = load(REPO / "topologies" / "switch-4way.yaml")

    swap = {"id=mem0.vmem,size=256M": "id=mem0.vmem,size=512M",
            "bus=sw0.dsp3,volatile-memdev=mem3": "bus=sw0.dsp2,volatile-memdev=mem3",
            "bus=sw0.dsp2,volatile-memdev=mem2": "bus=sw0.dsp3,volatile-memdev=mem2"}

    def hook(argv: list[str]) -> list[str]:
        out = []
        for tok in argv:
            for old, new in swap.items():
                if old in tok:
                    tok = tok.replace(old, new)
                    break
            out.append(tok)
        return out

    report = check_topology(topo, RunDir.create(tmp_path, "t"), argv_hook=hook)
    assert "cxl-type3 'mem0': volatile-memdev is 512M, expected 256M" in report.mismatches
    assert "cxl-type3 'mem3': parent is 'sw0.dsp2', expected 'sw0.dsp3'" in report.mismatches
    assert "cxl-type3 'mem2': parent is 'sw0.dsp3', expected 'sw0.dsp2'" in report.mismatches


def test_check_fails_on_an_unexpected_device(tmp_path: Path) -> None:
    topo = load(REPO / "topologies" / "direct-volatile.yaml")
    report = check_topology(topo, RunDir.create(tmp_path, "t"), argv_hook=lambda a: [
        *a, "-device", "cxl-rp,port=1,bus=hb0,id=rpX,chassis=0,slot=9"])
    assert report.mismatches == ("cxl-rp 'rpX': present in the machine, not in the topology",)


def test_launch_failure_carries_qemu_output_and_leaves_nothing(tmp_path: Path) -> None:
    topo = load(REPO / "topologies" / "default.yaml")
    run = RunDir.create(tmp_path, "t")
    machine = Machine(topo, QemuOptions(paused=True), run,
                      argv_hook=lambda a: [*a, "-device", "no-such-device"])
    with pytest.raises(LaunchError) as info:
        machine.launch()
    assert info.value.exitcode == 1
    assert "no-such-device" in str(info.value)
    assert (run.path / "argv.sh").read_text().count("no-such-device") == 1
    assert machine.pid is not None and not alive(machine.pid)


def test_exception_inside_the_context_stops_qemu(tmp_path: Path) -> None:
    topo = load(REPO / "topologies" / "default.yaml")
    pid = None
    with pytest.raises(RuntimeError), Machine(topo, QemuOptions(paused=True),
                                              RunDir.create(tmp_path, "t")) as m:
        pid = m.pid
        assert pid is not None and alive(pid)
        raise RuntimeError("boom")
    assert pid is not None and not alive(pid)
    # Graceful path: QMP quit gave QEMU's own exit status 0.
    assert m.exitcode == 0
