"""Whatever a step raises ends that run as ``error`` naming the step, with the
traceback kept in its run directory; the suite goes on, nothing is printed
as a traceback, and no QEMU is left. A plugin run starts one QEMU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxlrig.cli import main
from cxlrig.plugin.control import Control

from ..machine.procs import wait_gone

pytestmark = pytest.mark.guest

SCENARIOS = {
    # Passes validation (the schema is typed), fails in QEMU.
    "bad-qmp": """
name: bad-qmp
title: A QMP command QEMU does not know
point: step boundary
variants: [v2]
steps:
  - {id: hello, run: "echo hi"}
  - {id: ask, qmp: {execute: cxl-no-such-command, arguments: {path: /machine}}}
expect:
  all:
    - {step: ask, field: status, equals: 0}
""",
    # A phase named through a template is only known at run time.
    "never-marked": """
name: never-marked
title: Promote on a phase that was never marked
point: step boundary
variants: [v2]
plugin: {}
steps:
  - {id: idle, mark: idle}
  - {id: up, promote: {phase: "${variant}-never", top: 1}}
""",
    # The test garbles the plugin's reply to this snapshot.
    "bad-reply": """
name: bad-reply
title: A plugin reply that does not parse
point: step boundary
variants: [v2]
plugin: {}
steps:
  - {id: idle, mark: idle}
  - {id: garbled, mark: garbled}
""",
    "still-runs": """
name: still-runs
title: The next scenario still runs
point: step boundary
variants: [v2]
steps:
  - {id: t, run: "true"}
expect:
  all:
    - {step: t, field: status, equals: 0}
""",
}


def test_guest_a_raising_step_is_an_error_and_the_suite_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for name, text in SCENARIOS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        files.append(str(path))
    real = Control.command

    def garble(self: Control, line: str) -> str:
        reply = real(self, line)
        return "not-a-number" if line == "snapshot garbled" else reply

    monkeypatch.setattr(Control, "command", garble)
    results = tmp_path / "results"
    status = main(["run", *files, "--results", str(results)])
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert "Traceback" not in out + err

    doc = json.loads((results / "results.json").read_text())
    runs = {r["scenario"]: r for r in doc["runs"]}
    assert [r["scenario"] for r in doc["runs"]] == list(SCENARIOS)
    assert {n: r["verdict"] for n, r in runs.items()} == {
        "bad-qmp": "error", "never-marked": "error", "bad-reply": "error", "still-runs": "pass"}
    assert runs["bad-qmp"]["error_step"] == "ask"
    assert "cxl-no-such-command" in runs["bad-qmp"]["error"]
    assert runs["never-marked"]["error_step"] == "up"
    never = runs["never-marked"]["error"]
    assert "KeyError" in never and "v2-never" in never, never
    assert runs["bad-reply"]["error_step"] == "garbled"
    assert "ValueError" in runs["bad-reply"]["error"]
    for name in ("bad-qmp", "never-marked", "bad-reply"):
        run = runs[name]
        # The steps before the one that raised are kept.
        assert [s["id"] for s in run["steps"]] == [
            {"bad-qmp": "hello", "never-marked": "idle", "bad-reply": "idle"}[name]]
        tb = results / run["run_dir"] / run["traceback"]
        assert "Traceback (most recent call last)" in tb.read_text()
        assert f"{name} on v2" in out and f"could not complete: step '{run['error_step']}'" in out
    for run in runs.values():
        run_dir = results / run["run_dir"]
        # One machine per run: a plugin run no longer starts a paused twin.
        assert len(list(run_dir.rglob("argv.sh"))) == 1, run["scenario"]
        pid = int((run_dir / "qemu.pid").read_text())
        assert wait_gone(pid, 10), f"{run['scenario']}: QEMU {pid} outlived its run"
    # The reports render errors with the step and a link to the traceback.
    page = (results / "report.html").read_text()
    assert "Could not complete (step ask)" in page
    assert "traceback.txt" in page
