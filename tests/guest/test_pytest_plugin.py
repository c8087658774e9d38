"""The pytest plugin as a user meets it: their own test files, ``-n 2``, JUnit out.

Two user modules run under pytest-xdist with ``--dist loadfile`` (a module's
tests on one worker, so they share its boots): one proves a module's tests
share one machine, the other runs one test on two topologies, skips where a
requirement is not met, and fails for real where the guest says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]

# Each user module notes which xdist worker ran it: two modules under
# ``--dist loadfile`` on two workers must land on both.
WORKER_NOTE = '''
import os
from pathlib import Path


def note_worker(module):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "none")
    (Path(os.environ["WORKER_NOTES"]) / module).write_text(worker)
'''

SHARED = '''
import pytest
from worker_note import note_worker

pytestmark = pytest.mark.cxl(topology="default", variant="v2")


def test_leaves_a_mark(cxl_guest):
    note_worker("shared")
    assert cxl_guest.session.run("echo from-the-first-test > /tmp/mark").ok


def test_sees_the_mark(cxl_guest):
    assert cxl_guest.session.run("cat /tmp/mark").stdout.strip() == "from-the-first-test"


@pytest.mark.cxl(topology="default", variant="v2", shared=False)
def test_own_machine_has_no_mark(cxl_guest):
    assert not cxl_guest.session.run("test -e /tmp/mark").ok
'''

PER_TOPOLOGY = '''
import pytest
from worker_note import note_worker


@pytest.mark.cxl(topology=["default", "direct-volatile"], variant="v1")
def test_cxl_node_is_online(cxl_guest):
    note_worker("per_topology")
    node = cxl_guest.regions[0].node
    assert cxl_guest.nodes[node].mem_total > 0
    assert cxl_guest.session.run(f"test -d /sys/devices/system/node/node{node}").ok


@pytest.mark.cxl(topology="persistent-lsa", requires={"ram_regions": 1})
def test_needs_a_ram_region(cxl_guest):
    raise AssertionError("must not run: persistent-lsa has no ram region")


def test_default_machine_fails_for_real(cxl_guest):
    res = cxl_guest.session.run("cat /sys/devices/system/node/node7/meminfo")
    assert res.ok, res.stderr
'''


def test_user_tests_run_in_parallel(tmp_path: Path, kernels: Callable[[str], Path],
                                    initrd: Path) -> None:
    kernels("v1"), kernels("v2")
    (tmp_path / "test_shared.py").write_text(textwrap.dedent(SHARED))
    (tmp_path / "test_per_topology.py").write_text(textwrap.dedent(PER_TOPOLOGY))
    (tmp_path / "worker_note.py").write_text(textwrap.dedent(WORKER_NOTE))
    notes = tmp_path / "notes"
    notes.mkdir()
    junit = tmp_path / "junit.xml"
    env = {**os.environ, "CXLRIG_RUNS": str(tmp_path / "runs"), "WORKER_NOTES": str(notes),
           "PYTHONPATH": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-p",
         "no:cacheprovider", f"--junitxml={junit}", "-q", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=800, check=False)
    assert res.returncode == 1, res.stdout + res.stderr  # one test fails, by design
    outcome: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "pass")
        outcome[case.get("name", "")] = kind
    assert outcome == {
        "test_leaves_a_mark": "pass",
        "test_sees_the_mark": "pass",
        "test_own_machine_has_no_mark": "pass",
        "test_cxl_node_is_online[default-v1]": "pass",
        "test_cxl_node_is_online[direct-volatile-v1]": "pass",
        "test_needs_a_ram_region": "skipped",
        "test_default_machine_fails_for_real": "failure",
    }, res.stdout
    skipped = next(c for c in ET.parse(junit).getroot().iter("testcase")
                   if c.get("name") == "test_needs_a_ram_region")
    assert "needs 1 ram region" in (skipped.find("skipped").get("message") or "")  # type: ignore[union-attr]
    workers = {note.read_text() for note in notes.iterdir()}
    assert workers == {"gw0", "gw1"}, (workers, res.stdout)
