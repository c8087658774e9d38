"""A user's own programs in the guest with --add: a static binary, a dynamic
one (its libraries come along) and a directory with a script, in one boot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]

PROGRAM = """\
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    (void)argc;
    printf("%s says hello as uid %d\\n", argv[0], (int)getuid());
    return 0;
}
"""


def test_boot_runs_added_programs(tmp_path: Path) -> None:
    src = tmp_path / "hello.c"
    src.write_text(PROGRAM)
    subprocess.run(["gcc", "-static", "-o", str(tmp_path / "static"), str(src)], check=True)
    subprocess.run(["gcc", "-o", str(tmp_path / "dynamic"), str(src)], check=True)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "go.sh").write_text("#!/bin/sh\necho \"script in $(dirname $0)\"\nexit 3\n")
    (tools / "go.sh").chmod(0o755)
    env = {**os.environ, "CXLRIG_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run(
        [sys.executable, "-m", "cxlrig.cli", "boot", str(REPO / "topologies" / "default.yaml"),
         "--accel", "tcg", "--variant", "v2",
         "--add", f"{tmp_path / 'static'}:/opt/x", "--add", str(tmp_path / "dynamic"),
         "--add", f"{tools}:/usr/local/tools",
         "--exec", "/opt/x && /opt/dynamic && /usr/local/tools/go.sh"],
        env=env, capture_output=True, text=True, timeout=800, check=False)
    out = proc.stdout
    assert "/opt/x says hello as uid 0" in out, proc.stdout + proc.stderr
    assert "/opt/dynamic says hello as uid 0" in out, proc.stdout + proc.stderr
    assert "script in /usr/local/tools" in out, proc.stdout + proc.stderr
    assert proc.returncode == 3, "the command's status is the boot's"


def test_a_bad_add_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cxlrig.cli", "boot", str(REPO / "topologies" / "default.yaml"),
         "--add", f"{tmp_path}/nothing:/opt/x", "--exec", "true"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"--add '{tmp_path}/nothing:/opt/x': {tmp_path}/nothing: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
