"""``cxlrig matrix`` end to end, with real guests: run, shard and merge, kill and
resume, record, and name a planted regression.

One history database for the module; the runs happen in this order (each
fixture asks for the one before it): a full run of matrices/smoke.yaml, the
same in two shards merged, a run killed with SIGKILL and resumed, and a run
with one expectation flipped and one figure planted far outside its band.
"""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cxlrig.matrix.record import CELL_FILE, MatrixRun, load_run
from cxlrig.results import Verdict

from ..conftest import REPO

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]

SMOKE = REPO / "matrices" / "smoke.yaml"
EXPECTED = {
    "default/v1/bring-up": Verdict.PASS,
    "default/v1/unprivileged-caller": Verdict.PASS,
    "default/v2/bring-up": Verdict.PASS,
    "default/v2/unprivileged-caller": Verdict.PASS,
    "devdax/v1/bring-up": Verdict.PASS,
    "devdax/v1/unprivileged-caller": Verdict.SKIP,
}


@dataclass(frozen=True)
class Work:
    root: Path
    env: dict[str, str]

    def cxlrig(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cxlrig.cli", *args], env=self.env,
                              cwd=self.root, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "cxlrig.cli", *args], env=self.env,
                                cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, kernels: Callable[[str], Path],
         initrd: Path) -> Work:
    kernels("v1"), kernels("v2")  # built before any timeout starts counting
    root = tmp_path_factory.mktemp("matrix")
    env = {**os.environ, "CXLRIG_HISTORY": str(root / "history.sqlite"),
           "CXLRIG_RUNS": str(root / "runs")}
    return Work(root, env)


def verdicts(run: MatrixRun) -> dict[str, Verdict | None]:
    return {c.key: c.verdict for c in run.cells}


def qemus_under(path: Path) -> list[int]:
    """QEMU processes whose command line names ``path`` (their run dirs are under it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(str(path).encode() in a for a in argv):
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def full(work: Work) -> Path:
    out = work.root / "full"
    res = work.cxlrig("matrix", "run", str(SMOKE), "--jobs", "2", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_full_run_gives_the_predicted_verdicts(work: Work, full: Path) -> None:
    run = load_run(full)
    assert verdicts(run) == EXPECTED
    skip = run.cell("devdax/v1/unprivileged-caller")
    assert skip is not None and skip.reason is not None and "ram region" in skip.reason
    booted = [c for c in run.cells if c.verdict is Verdict.PASS]
    assert all(c.figures["boot_s"] > 0 and c.attempts == 1 for c in booted)
    assert {k.label: k.like for k in run.kernels.values()} == {"v1": "v1", "v2": "v2"}
    # Every cell that ran links its own report, and JUnit has one case per cell.
    for c in booted:
        assert c.report is not None and (full / c.report).is_file()
    cases = ET.parse(full / "junit.xml").getroot().iter("testcase")
    assert sorted(f"{c.get('classname')}[{c.get('name', '').rsplit('[', 1)[-1]}" for c in
                  cases) == sorted(f"{k.split('/')[0]}.{k.split('/')[2]}[{k.split('/')[1]}]"
                                   for k in EXPECTED)
    kc = json.loads((full / "kcidb.json").read_text())
    assert len(kc["tests"]) == len(EXPECTED)
    assert "grid" in (full / "dashboard.html").read_text()
    assert qemus_under(full) == []


@pytest.fixture(scope="module")
def merged(work: Work, full: Path) -> Path:
    shards = []
    for i in (1, 2):
        out = work.root / f"shard{i}"
        res = work.cxlrig("matrix", "run", str(SMOKE), "--shard", f"{i}/2", "--jobs", "1",
                          "--out", str(out), "--no-history")
        assert res.returncode == 0, res.stdout + res.stderr
        shards.append(out)
    res = work.cxlrig("matrix", "merge", *map(str, shards), "--out", str(work.root / "merged"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nothing changed" in res.stdout  # compared with the full run, the one before
    return work.root / "merged"


def test_shards_merged_equal_one_run(full: Path, merged: Path) -> None:
    one, two = load_run(full), load_run(merged)
    assert [c.key for c in two.cells] == [c.key for c in one.cells]
    assert verdicts(two) == verdicts(one)
    assert two.shard == "1/1"
    halves = [load_run(merged.parent / f"shard{i}") for i in (1, 2)]
    assert sorted(len(h.cells) for h in halves) == [3, 3]
    assert not {c.key for c in halves[0].cells} & {c.key for c in halves[1].cells}
    for c in two.cells:
        if c.report is not None:
            assert (merged / c.report).is_file()


@pytest.fixture(scope="module")
def resumed(work: Work, merged: Path) -> Path:
    out = work.root / "killed"
    proc = work.popen("matrix", "run", str(SMOKE), "--jobs", "1", "--out", str(out))
    try:
        deadline = time.monotonic() + 600
        while len(list(out.glob(f"cells/*/*/*/{CELL_FILE}"))) < 2:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no two cells finished in 600 s"
            time.sleep(0.2)
        # Mid-cell: the third cell's machine is up (or coming up) when the kill lands.
        while not qemus_under(out) and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    gone_by = time.monotonic() + 120
    while qemus_under(out) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert qemus_under(out) == [], "a QEMU outlived the killed matrix run"
    return out


def test_resume_after_kill_redoes_only_unfinished_cells(work: Work, resumed: Path) -> None:
    before = {p: (p.stat().st_mtime_ns, p.read_bytes())
              for p in resumed.glob(f"cells/*/*/*/{CELL_FILE}")}
    assert 2 <= len(before) < len(EXPECTED)
    res = work.cxlrig("matrix", "run", str(SMOKE), "--resume", str(resumed), "--jobs", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    for path, (mtime, data) in before.items():
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, data), path
    run = load_run(resumed)
    assert verdicts(run) == EXPECTED
    # The cell the kill interrupted kept its partial attempt, renamed.
    assert list(resumed.glob("cells/*/*/*/attempt-1.interrupted"))
    assert qemus_under(resumed) == []


def test_compare_names_a_planted_regression(work: Work, resumed: Path) -> None:
    # Same matrix name, but v2's expectation of the privilege check flipped.
    scen = (REPO / "scenarios" / "unprivileged-caller.yaml").read_text()
    flipped = scen.replace("field: first_call.errno, equals: EPERM",
                           "field: first_call.errno, equals: ENOENT")
    assert flipped != scen
    (work.root / "flipped").mkdir()
    (work.root / "flipped" / "unprivileged-caller.yaml").write_text(flipped)
    matrix = SMOKE.read_text().replace(
        "scenarios: [bring-up, unprivileged-caller]",
        "scenarios: [bring-up, flipped/unprivileged-caller.yaml]")
    (work.root / "smoke.yaml").write_text(matrix)
    out = work.root / "planted"
    res = work.cxlrig("matrix", "run", str(work.root / "smoke.yaml"), "--jobs", "2",
                      "--out", str(out), "--no-history")
    assert res.returncode == 1, res.stdout + res.stderr  # a check failed
    assert load_run(out).cell("default/v2/unprivileged-caller").verdict is Verdict.FAIL  # type: ignore[union-attr]
    # A figure far outside the band the three earlier runs draw.
    cell_file = out / "cells" / "default" / "v1" / "bring-up" / CELL_FILE
    cell = json.loads(cell_file.read_text())
    cell["figures"]["boot_s"] *= 100
    cell_file.write_text(json.dumps(cell))
    res = work.cxlrig("matrix", "publish", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    for text in (res.stdout, work.cxlrig("matrix", "compare", str(out)).stdout):
        lines = [line for line in text.splitlines() if "REGRESSION" in line]
        assert any("default/v2/unprivileged-caller: pass -> fail" in line for line in lines), text
        assert any("default/v1/bring-up: boot_s" in line and "outside" in line
                   for line in lines), text
        # Nothing else regressed but, perhaps, a timing the host's load moved
        # (boots are real and this machine is shared): never a verdict.
        others = [line for line in lines if "pass -> fail" not in line
                  and "default/v1/bring-up: boot_s" not in line]
        assert all(" ->" not in line and "outside" in line for line in others), text
    assert work.cxlrig("matrix", "compare", str(out)).returncode == 1
    assert "pass -> fail" in html.unescape((out / "dashboard.html").read_text())
    # The runs before it agree with each other: nothing regressed between them.
    res = work.cxlrig("matrix", "compare", str(work.root / "full"), str(work.root / "merged"))
    assert res.returncode == 0 and "nothing changed" in res.stdout, res.stdout + res.stderr
