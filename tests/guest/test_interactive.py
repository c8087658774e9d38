"""'cxlrig boot' without --exec gives a person the guest shell on a terminal;
Ctrl-] leaves, and leaves nothing running."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect
import pytest

from ..conftest import REPO
from ..machine.procs import alive

pytestmark = pytest.mark.guest


def console(tmp_path: Path) -> pexpect.spawn:
    """'cxlrig boot' on a pseudo-terminal, up to the guest shell."""
    child = pexpect.spawn(sys.executable, ["-m", "cxlrig.cli", "boot",
                                           str(REPO / "topologies" / "direct-volatile.yaml"),
                                           "--accel", "tcg"],
                          env={"CXLRIG_RUNS": str(tmp_path), "PATH": "/usr/bin:/bin",
                               "HOME": str(Path.home())},
                          encoding="utf-8", timeout=120)
    child.expect("Ctrl-\\] or 'poweroff -f' leaves")
    return child


def test_guest_interactive_console_and_escape(tmp_path: Path) -> None:
    child = console(tmp_path)
    try:
        child.sendline("echo $((6*7)) from-the-guest")
        child.expect("42 from-the-guest")
        child.sendline("numactl -H | grep -c cpus")
        child.expect("2\r?\n")
        pid = int(next(tmp_path.glob("*/qemu.pid")).read_text())
        child.send("\x1d")  # Ctrl-]
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert not alive(pid), "QEMU outlived the console"
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_guest_interactive_poweroff_leaves_cleanly(tmp_path: Path) -> None:
    child = console(tmp_path)
    try:
        pid = int(next(tmp_path.glob("*/qemu.pid")).read_text())
        child.sendline("poweroff -f")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert not alive(pid)
    finally:
        if child.isalive():
            child.terminate(force=True)
