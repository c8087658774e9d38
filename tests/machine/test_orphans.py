"""Killing the orchestrator, however it is killed, leaves no QEMU behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO
from .procs import alive, wait_gone

pytestmark = pytest.mark.qemu


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ, CXLRIG_RUNS=str(tmp_path / "runs"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxlrig.cli", "machine", str(REPO / "topologies" / "default.yaml")],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = list((tmp_path / "runs").glob("*/qemu.pid"))
        if pids and pids[0].read_text().strip():
            qemu = int(pids[0].read_text())
            # Wait until the machine is really up (QMP connected, message printed).
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            assert "QEMU running" in line, line
            assert alive(qemu)
            return proc, qemu
        if proc.poll() is not None:
            raise AssertionError(f"cxlrig machine exited early: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("QEMU did not start within 30 s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=lambda s: s.name)
def test_killed_orchestrator_leaves_no_qemu(tmp_path: Path, sig: signal.Signals) -> None:
    proc, qemu = _start(tmp_path)
    try:
        proc.send_signal(sig)
        code = proc.wait(30)
        assert wait_gone(qemu, 10), f"QEMU {qemu} outlived cxlrig after {sig.name}"
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:
            # Graceful: the orchestrator unwound, shut QEMU down and said so.
            assert code == 130
            assert proc.stderr is not None
            assert b"interrupted" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        if alive(qemu):
            os.kill(qemu, signal.SIGKILL)
