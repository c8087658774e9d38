"""Faults of the rig itself: a guest that panics, a guest that stops
answering, QEMU killed by a signal, cxlrig sent SIGTERM. Each ends its run as
``error`` with the console tail, results.json is complete, no QEMU is left,
and (but for cxlrig's own SIGTERM) the next scenario runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cxlrig.cli import main

from ..conftest import REPO
from ..machine.procs import alive, wait_gone

pytestmark = pytest.mark.guest


def scenario(name: str, *steps: str) -> str:
    return "\n".join([f"name: {name}", f"title: {name}", "point: rig faults",
                      "variants: [v2]", "steps:", *(f"  - {s}" for s in steps),
                      "expect:", "  all:", "    - {step: ready, field: status, equals: 0}"]) + "\n"


SCENARIOS = {
    # The kernel panics mid-scenario (panic=-1 would reboot it at once).
    "panics": scenario("panics", "{id: ready, run: 'true'}",
                       "{id: crash, run: 'echo c > /proc/sysrq-trigger'}",
                       "{id: never, run: 'true'}"),
    # Every vCPU stops: the guest answers nothing, as a hung kernel would.
    "hangs": scenario("hangs", "{id: ready, run: 'true'}",
                      "{id: freeze, qmp: {execute: stop}}",
                      "{id: stuck, run: 'true', timeout: 5}"),
    # The test kills QEMU with SIGKILL while this step sleeps.
    "killed": scenario("killed", "{id: ready, run: 'true'}",
                       "{id: sleep, run: 'sleep 60'}"),
    "still-runs": scenario("still-runs", "{id: ready, run: 'true'}"),
}


def _kill_qemu_when_sleeping(run_dir: Path, stop: threading.Event) -> None:
    """SIGKILL the run's QEMU once its 'ready' step has ended."""
    steps = run_dir / "steps.jsonl"
    while not stop.is_set():
        if steps.exists() and '"ready"' in steps.read_text():
            time.sleep(0.5)  # into the sleep
            os.kill(int((run_dir / "qemu.pid").read_text()), signal.SIGKILL)
            return
        time.sleep(0.05)


def test_guest_panic_hang_and_killed_qemu_end_as_errors(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    files = []
    for name, text in SCENARIOS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        files.append(str(path))
    results = tmp_path / "results"
    stop = threading.Event()
    killer = threading.Thread(target=_kill_qemu_when_sleeping,
                              args=(results / "killed-v2", stop), daemon=True)
    killer.start()
    try:
        status = main(["run", *files, "--results", str(results)])
    finally:
        stop.set()
        killer.join(5)
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert "Traceback" not in out + err
    runs = {r["scenario"]: r for r in json.loads((results / "results.json").read_text())["runs"]}
    assert {n: r["verdict"] for n, r in runs.items()} == {
        "panics": "error", "hangs": "error", "killed": "error", "still-runs": "pass"}
    assert {n: r["error_step"] for n, r in runs.items() if r["error_step"]} == {
        "panics": "crash", "hangs": "stuck", "killed": "sleep"}
    panic = runs["panics"]["error"]
    assert "Kernel panic - not syncing" in panic and "kernel console" in panic, panic
    assert "sysrq: Trigger a crash" in panic, panic
    hang = runs["hangs"]["error"]
    assert "timed out after 5 s" in hang and "kernel console" in hang, hang
    killed = runs["killed"]["error"]
    assert "QEMU went away (exit status -9)" in killed and "kernel console" in killed, killed
    for run in runs.values():
        run_dir = results / run["run_dir"]
        assert [s["id"] for s in run["steps"]][:1] == ["ready"]
        pid = int((run_dir / "qemu.pid").read_text())
        assert wait_gone(pid, 10), f"{run['scenario']}: QEMU {pid} outlived its run"
        assert (run_dir / "console.log").stat().st_size > 0


def test_guest_sigterm_to_cxlrig_mid_step_leaves_results_and_no_qemu(tmp_path: Path) -> None:
    path = tmp_path / "sleeps.yaml"
    path.write_text(scenario("sleeps", "{id: ready, run: 'true'}",
                             "{id: sleep, run: 'sleep 60'}"))
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "cxlrig.cli", "run", str(path),
                             "--results", str(results)], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    steps = results / "sleeps-v2" / "steps.jsonl"
    qemu = None
    try:
        deadline = time.monotonic() + 300
        while not (steps.exists() and '"ready"' in steps.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the scenario never reached its sleep"
            time.sleep(0.05)
        qemu = int((results / "sleeps-v2" / "qemu.pid").read_text())
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if qemu is not None and alive(qemu):
            os.kill(qemu, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert b"interrupted" in err
    assert qemu is not None and wait_gone(qemu, 10), "QEMU outlived cxlrig's SIGTERM"
    run, = json.loads((results / "results.json").read_text())["runs"]
    assert (run["scenario"], run["verdict"]) == ("sleeps", "error")
    assert run["error"].startswith("interrupted\n  kernel console"), run["error"]
    assert "cxlrig: init done" in run["error"]
