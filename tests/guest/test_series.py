"""A reviewer's own series: built with --series, judged as it declares.

The series is v2 without its CAP_SYS_ADMIN patch. Declared ``like: v1`` the
unprivileged-caller scenario passes with v1's verdict (the hole is back);
declared ``like: v2`` it fails on the check that names the missing EPERM;
with no declaration it ends unjudged and says which variant's checks held.
One kernel serves the three runs: the declaration is not part of the image.

A second series, v2 plus a patch that makes every syscall migration fail,
turns the kernel's own selftest cases to "not ok": the peer suite catches a
kernel that is broken where the rig's scenarios are not looking.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from cxlrig.images.kernel import series_patches

from ..conftest import REPO

pytestmark = [pytest.mark.guest, pytest.mark.timeout(1200)]

SCENARIO = REPO / "scenarios" / "unprivileged-caller.yaml"
SELFTESTS = REPO / "scenarios" / "mm-selftests.yaml"
BREAK = Path(__file__).parent / "data" / "break-move_pages.patch"


def _run(series: Path, results: Path, tmp_path: Path,
         scenario: Path = SCENARIO) -> tuple[int, dict[str, Any], str]:
    env = {**os.environ, "CXLRIG_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run(
        [sys.executable, "-m", "cxlrig.cli", "run", str(scenario), "--series", str(series),
         "--results", str(results)],
        env=env, capture_output=True, text=True, timeout=1100, check=False)
    data = json.loads((results / "results.json").read_text())
    return proc.returncode, data["runs"][0], proc.stdout + proc.stderr


def test_a_series_is_judged_as_it_declares(tmp_path: Path) -> None:
    series = tmp_path / "nocap"
    series.mkdir()
    for p in series_patches("v2"):
        if "CAP_SYS_ADMIN" not in p.name:
            shutil.copy(p, series / p.name)

    (series / "variant.yaml").write_text("like: v1\n")
    rc, run, out = _run(series, tmp_path / "as-v1", tmp_path)
    assert (rc, run["verdict"], run["variant"], run["judged_as"]) == (0, "pass", "nocap", "v1"), out
    assert run["predicted"].startswith("returns 0"), run
    assert {c["step"] for c in run["checks"]} >= {"move", "where"}

    (series / "variant.yaml").write_text("like: v2\n")
    rc, run, out = _run(series, tmp_path / "as-v2", tmp_path)
    assert (rc, run["verdict"], run["judged_as"]) == (1, "fail", "v2"), out
    failed = [c["message"] for c in run["checks"] if not c["ok"]]
    assert any(m.startswith("move: first_call.errno is None, expected == 'EPERM'")
               or m.startswith("move: first_call.errno is") for m in failed), failed
    assert "move: first_call.errno" in out, out

    (series / "variant.yaml").unlink()
    rc, run, out = _run(series, tmp_path / "unjudged", tmp_path)
    assert (rc, run["verdict"]) == (0, "unjudged"), out
    assert run["reason"].startswith("no expectation for this variant; as v1 5 of 5 checks "
                                    "hold, as v2 2 of 4 checks hold"), run["reason"]
    assert any(c["message"].startswith("[as v2] move: first_call.errno") for c in run["checks"])
    case = next(ET.parse(tmp_path / "unjudged" / "junit.xml").getroot().iter("testcase"))
    skipped = case.find("skipped")
    assert skipped is not None and "no expectation" in skipped.get("message", "")


def test_a_broken_kernel_fails_its_selftest_cases(tmp_path: Path) -> None:
    series = tmp_path / "broken"
    series.mkdir()
    for p in series_patches("v2"):
        shutil.copy(p, series / p.name)
    shutil.copy(BREAK, series / "0006-mm-migrate-break-move_pages.patch")
    (series / "variant.yaml").write_text("like: v2\n")
    rc, run, out = _run(series, tmp_path / "broken-run", tmp_path, SELFTESTS)
    assert (rc, run["verdict"], run["judged_as"]) == (1, "fail", "v2"), out
    cases = {c["case"]: c for c in run["checks"] if c.get("case")}
    migration = {k: c for k, c in cases.items() if k.startswith("migration.")}
    assert len(migration) == 5 and not any(c["ok"] for c in migration.values()), migration
    moved = cases["migration.private_anon"]
    assert moved["message"].startswith("migration.private_anon: not ok: migration.c:"), moved
    assert not cases["move_phys_pages.ping_pong"]["ok"], cases["move_phys_pages.ping_pong"]
    # The cases that move nothing still pass: the breakage is where it was put.
    assert cases["move_phys_pages.bad_flags"]["ok"], cases["move_phys_pages.bad_flags"]
    failed = {c.get("name") for c in ET.parse(tmp_path / "broken-run" / "junit.xml").getroot()
              .iter("testcase") if c.find("failure") is not None}
    assert "migration.private_anon[broken]" in failed, failed
