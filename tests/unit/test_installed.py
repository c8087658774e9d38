"""cxlrig installed from its wheel, run outside the checkout, finds its data."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ..conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, installed under a prefix of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "w"),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "w").glob("cxlrig-*.whl")
    prefix = tmp / "prefix"
    # --ignore-installed: pip would otherwise uninstall the checkout's own editable
    # install from the running environment before installing under the prefix.
    subprocess.run([*pip, "install", "--no-deps", "--ignore-installed", "--prefix", str(prefix),
                    str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return prefix


def run(prefix: Path, cwd: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    purelib = sysconfig.get_path("purelib", vars={"base": str(prefix)})
    environ = {**os.environ, "PYTHONPATH": purelib, **env}
    environ.pop("CXLRIG_ROOT", None) if "CXLRIG_ROOT" not in env else None
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_wheel_carries_the_data_and_runs_outside_the_checkout(installed: Path,
                                                                   tmp_path: Path) -> None:
    share = installed / "share" / "cxlrig"
    for part in ("guest/kernel/config.fragment", "guest/kernel/patches/v2",
                 "guest/programs/mpp.c", "guest/initramfs/init", "qemu-plugin/cxlrig-mem.c",
                 "topologies/default.yaml", "scenarios/unprivileged-caller.yaml",
                 "docs/results.schema.json"):
        assert (share / part).exists(), part
    code = """
import cxlrig, cxlrig.paths as p
from cxlrig.images import programs
from cxlrig.plugin import build
from cxlrig.scenario.runner import topology_path
from cxlrig.topology import load
print(cxlrig.__file__)
print(p.DATA_ROOT)
print(programs.cache_key(p.require_data("guest", "programs")))
print(load(topology_path("default")).name)
"""
    res = run(installed, tmp_path, code, CXLRIG_ROOT=str(share))
    assert res.returncode == 0, res.stderr
    module, root, key, name = res.stdout.split()
    assert Path(module).is_relative_to(installed), module  # not the checkout's copy
    assert Path(root) == share
    assert len(key) == 64 and name == "default"


def test_no_data_is_a_message_not_a_traceback(installed: Path, tmp_path: Path) -> None:
    code = "import sys; from cxlrig.cli import main; sys.exit(main(['guest', 'build']))"
    res = run(installed, tmp_path, code, CXLRIG_ROOT=str(tmp_path / "nowhere"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "is missing: cxlrig's data" in res.stderr and "CXLRIG_ROOT" in res.stderr
