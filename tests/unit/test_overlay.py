"""Files into the guest: --add parsing, staging (static, dynamic, scripts,
directories), the appended cpio and its cache, and scenarios' ``files:``."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from cxlrig.images import overlay
from cxlrig.images.overlay import AddError, GuestFile, stage, with_files
from cxlrig.scenario.model import ScenarioError, load_scenario

from ..conftest import REPO


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("CXLRIG_CACHE", str(path))
    return path


def _cc(tmp_path: Path, name: str, *flags: str) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text('#include <stdio.h>\nint main(void){puts("hi");return 0;}\n')
    out = tmp_path / name
    subprocess.run(["gcc", *flags, "-o", str(out), str(src)], check=True)
    return out


def _members(image: Path, base: Path) -> list[str]:
    """The paths in the cpio appended to ``base`` to make ``image``."""
    data = image.read_bytes()
    assert data.startswith(base.read_bytes())
    appended = gzip.decompress(data[len(base.read_bytes()):])
    res = subprocess.run(["cpio", "--quiet", "-it"], input=appended, capture_output=True,
                         check=True)
    return sorted(res.stdout.decode().split())


def _initrd(tmp_path: Path) -> Path:
    path = tmp_path / "base.cpio.gz"
    path.write_bytes(gzip.compress(b"not really a cpio, only its bytes matter here"))
    return path


def test_parse_defaults_to_opt_and_resolves_relative_hosts(tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    assert GuestFile.parse("tool", base=tmp_path) == GuestFile(
        tmp_path / "tool", PurePosixPath("/opt/tool"))
    assert GuestFile.parse(f"{tmp_path}/tool:/usr/bin/t").guest == PurePosixPath("/usr/bin/t")


@pytest.mark.parametrize(("text", "message"), [
    ("missing", "--add 'missing': {tmp}/missing: no such file or directory"),
    (":/opt/x", "--add ':/opt/x': no host path (HOST[:GUEST])"),
    ("tool:opt/x", "--add 'tool:opt/x': the guest path 'opt/x' must be absolute"),
    ("tool:/opt/../etc/x", "--add 'tool:/opt/../etc/x': the guest path '/opt/../etc/x' must"),
    ("tool:/", "--add 'tool:/': the guest path '/' must be absolute"),
    ("tool:/init", "--add 'tool:/init': /init would replace what the guest needs to boot"),
    ("tool:/proc/x", "--add 'tool:/proc/x': /proc/x would replace what the guest needs"),
])
def test_parse_errors_name_the_argument(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "tool").write_text("x")
    with pytest.raises(AddError) as exc:
        GuestFile.parse(text, base=tmp_path)
    assert str(exc.value).startswith(message.format(tmp=tmp_path)), str(exc.value)


def test_static_binaries_and_scripts_come_alone(tmp_path: Path) -> None:
    static = _cc(tmp_path, "s", "-static")
    script = tmp_path / "go.sh"
    script.write_text("#!/bin/sh\necho go\n")
    script.chmod(0o750)
    root = tmp_path / "root"
    stage([GuestFile(static, PurePosixPath("/opt/x")),
           GuestFile(script, PurePosixPath("/opt/go"))], root)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["opt/go", "opt/x"]
    assert (root / "opt/x").read_bytes() == static.read_bytes()
    assert (root / "opt/go").stat().st_mode & 0o777 == 0o750


def test_a_dynamic_binary_brings_its_libraries(tmp_path: Path) -> None:
    dyn = _cc(tmp_path, "d")
    root = tmp_path / "root"
    stage([GuestFile(dyn, PurePosixPath("/opt/d"))], root)
    ldd = subprocess.run(["ldd", str(dyn)], capture_output=True, text=True, check=True).stdout
    wanted = [w for w in ldd.split() if w.startswith("/")]
    assert wanted, ldd
    for lib in wanted:
        assert (root / lib.lstrip("/")).is_file(), (lib, ldd)


def test_a_directory_is_copied_whole(tmp_path: Path) -> None:
    tree = tmp_path / "suite"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_text("a")
    (tree / "sub" / "b").write_text("b")
    root = tmp_path / "root"
    stage([GuestFile(tree, PurePosixPath("/opt/suite"))], root)
    assert (root / "opt/suite/a").read_text() == "a"
    assert (root / "opt/suite/sub/b").read_text() == "b"


def test_too_much_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlay, "MAX_BYTES", 10)
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(AddError, match="exceed 0 MiB"):
        stage([GuestFile(tmp_path / "big", PurePosixPath("/opt/big"))], tmp_path / "root")


def test_with_files_appends_a_cached_cpio(tmp_path: Path, cache: Path) -> None:
    base = _initrd(tmp_path)
    assert with_files(base, []) == base
    (tmp_path / "tool").write_text("#!/bin/sh\necho one\n")
    gf = GuestFile.parse("tool:/usr/local/bin/tool", base=tmp_path)
    image = with_files(base, [gf, gf])
    assert image.parent == cache / "initramfs"
    assert _members(image, base) == ["usr", "usr/local", "usr/local/bin",
                                     "usr/local/bin/tool"]
    stamp = image.stat().st_mtime_ns
    assert with_files(base, [gf]) == image and image.stat().st_mtime_ns == stamp
    (tmp_path / "tool").write_text("#!/bin/sh\necho two\n")
    other = with_files(base, [gf])
    assert other != image and other.exists() and image.exists()


SCENARIO = """\
name: mine
title: t
point: p
topology: {topology}
files: [{files}]
steps:
  - {{id: a, run: 'true'}}
"""


def test_scenario_files_and_topology_are_relative_to_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "t").write_text("#!/bin/sh\n")
    (tmp_path / "mytopo.yaml").write_text((REPO / "topologies" / "default.yaml").read_text())
    path = tmp_path / "mine.yaml"
    path.write_text(SCENARIO.format(topology="mytopo", files="'bin/t:/opt/t', bin/t"))
    spec, _ = load_scenario(path)
    assert spec.topology == str(tmp_path / "mytopo.yaml")
    assert spec.files == [f"{tmp_path}/bin/t:/opt/t", f"{tmp_path}/bin/t:/opt/t"]
    path.write_text(SCENARIO.format(topology="large", files=""))
    spec, _ = load_scenario(path)
    assert spec.topology == "large", "a shipped topology stays a name"


def test_scenario_path_problems_are_located(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(SCENARIO.format(topology="nowhere", files="gone"))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    text = str(exc.value)
    assert "mine.yaml:4:1: topology: 'nowhere' is neither next to the scenario" in text, text
    assert f"mine.yaml:5:9: files[0]: {tmp_path}/gone: no such file or directory" in text, text
