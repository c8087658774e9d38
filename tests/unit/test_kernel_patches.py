"""The move_phys_pages series and config fragments, checked without building.

The apply tests read the files the series touch straight out of Debian's
linux-source-6.12 tarball (a few seconds of xz), once per session.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cxlrig.images import kernel
from cxlrig.images.kernel import (
    KERNEL_DIR,
    SYSCALL_PATCH,
    KernelBuildError,
    _apply_series,
    _SourceTree,
    merged_fragments,
    missing_options,
    parse_fragment,
    patch_paths,
    series_patches,
    syscall_number,
)

SERIES = ("v1", "v2")
NR = 463


def _touched(series: str) -> list[str]:
    paths: list[str] = []
    for patch in series_patches(series):
        paths += [p for p in patch_paths(patch) if p not in paths]
    return paths


@pytest.fixture(scope="session")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files any series touches, as the tarball ships them."""
    tarball = kernel.DEFAULT_TARBALL
    if not tarball.is_file():
        pytest.fail(f"{tarball} is missing: install linux-source-6.12 (scripts/setup.sh)")
    members = sorted({p for s in SERIES for p in _touched(s)} - _created())
    root = tmp_path_factory.mktemp("shipped")
    subprocess.run(
        ["tar", "-I", "xz -T0", "-xf", str(tarball), "-C", str(root), "--strip-components=1"]
        + ["--occurrence=1"]
        + [f"linux-source-6.12/{p}" for p in members],
        check=True,
    )
    return root


def _created() -> set[str]:
    """Files the series add, which the tarball does not have."""
    created = set()
    for series in SERIES:
        current = None
        for line in "\n".join(p.read_text() for p in series_patches(series)).splitlines():
            if line.startswith("diff --git a/"):
                current = line.split(" b/", 1)[1]
            elif line.startswith("new file mode") and current:
                created.add(current)
    return created


def _copy_shipped(shipped: Path, dest: Path, paths: list[str]) -> None:
    for p in paths:
        if (shipped / p).is_file():
            (dest / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(shipped / p, dest / p)


# ---- the series as mails --------------------------------------------------------------


@pytest.mark.parametrize("series", SERIES)
def test_series_are_format_patch_mails(series: str) -> None:
    patches = series_patches(series)
    for n, patch in enumerate(patches, start=1):
        text = patch.read_text()
        assert text.startswith("From 0000000000000000000000000000000000000000 "), patch
        assert re.search(r"^From: .+ <.+@.+>$", text, re.M), patch
        subject = re.search(r"^Subject: \[PATCH (\d+)/(\d+)\] (.+)$", text, re.M)
        assert subject, patch
        assert (int(subject.group(1)), int(subject.group(2))) == (n, len(patches)), patch
        assert patch.name.startswith(f"{n:04d}-"), patch
        assert re.search(r"^Signed-off-by: ", text, re.M), patch
        assert "\n---\n" in text and "diff --git " in text, patch


def test_v2_starts_with_the_v1_patches() -> None:
    def body(p: Path) -> str:
        return re.sub(r"^Subject: \[PATCH \d+/\d+\]", "Subject:", p.read_text(), flags=re.M)

    v1, v2 = series_patches("v1"), series_patches("v2")
    assert len(v2) > len(v1)
    for a, b in zip(v1, v2, strict=False):
        assert a.name == b.name
        assert body(a) == body(b), f"{b} differs from {a} beyond its numbering"


@pytest.mark.parametrize("series", SERIES)
def test_series_applies_with_patch(series: str, shipped: Path, tmp_path: Path) -> None:
    _copy_shipped(shipped, tmp_path, _touched(series))
    for patch in series_patches(series):
        for extra in (["--dry-run"], []):
            proc = subprocess.run(
                ["patch", "-p1", "--batch", "--forward", *extra, "-i", str(patch)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                check=False,
            )
            assert proc.returncode == 0, f"{patch.name}:\n{proc.stdout}{proc.stderr}"
    migrate = (tmp_path / "mm/migrate.c").read_text()
    assert "SYSCALL_DEFINE5(move_phys_pages," in migrate
    assert ("capable(CAP_SYS_ADMIN)" in migrate) == (series == "v2")


@pytest.mark.parametrize("series", SERIES)
def test_series_applies_with_git_am(series: str, shipped: Path, tmp_path: Path) -> None:
    _copy_shipped(shipped, tmp_path, _touched(series))
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@localhost",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@localhost",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )

    assert git("init", "-q").returncode == 0
    assert git("add", "-f", "-A").returncode == 0
    assert git("commit", "-q", "-m", "shipped").returncode == 0
    am = git("am", "-q", *map(str, series_patches(series)))
    assert am.returncode == 0, am.stdout + am.stderr
    log = git("log", "--format=%s", "HEAD").stdout.splitlines()
    assert len(log) == len(series_patches(series)) + 1


# ---- the system call number -------------------------------------------------------------


def _added_lines(patch: Path, path: str) -> list[str]:
    lines, inside = [], False
    for line in patch.read_text().splitlines():
        if line.startswith("diff --git "):
            inside = line == f"diff --git a/{path} b/{path}"
        elif inside and line.startswith("+") and not line.startswith("+++"):
            lines.append(line[1:])
    return lines


@pytest.mark.parametrize("series", SERIES)
def test_syscall_number_is_463_in_every_table(series: str) -> None:
    patch = KERNEL_DIR / "patches" / series / SYSCALL_PATCH
    assert syscall_number(series) == NR

    def table_numbers(path: str) -> list[int]:
        return [
            int(line.split()[0])
            for line in _added_lines(patch, path)
            if "move_phys_pages" in line.split()
        ]

    assert table_numbers("arch/x86/entry/syscalls/syscall_64.tbl") == [NR]
    assert table_numbers("arch/x86/entry/syscalls/syscall_32.tbl") == [NR]
    assert table_numbers("scripts/syscall.tbl") == [NR]
    generic = "\n".join(_added_lines(patch, "include/uapi/asm-generic/unistd.h"))
    assert re.search(rf"^#define __NR_move_phys_pages {NR}$", generic, re.M)
    assert re.search(r"^__SYSCALL\(__NR_move_phys_pages, sys_move_phys_pages\)$", generic, re.M)
    assert re.search(rf"^#define __NR_syscalls {NR + 1}$", generic, re.M)


def test_no_other_patch_names_the_number() -> None:
    # Any other occurrence would be a second place to keep in step.
    for series in SERIES:
        for patch in series_patches(series):
            if patch.name == SYSCALL_PATCH:
                continue
            added = "\n".join(line for line in patch.read_text().splitlines() if line[:1] == "+")
            assert not re.search(rf"\b{NR}\b", added), patch


def test_463_is_the_first_free_number(shipped: Path) -> None:
    table = (shipped / "arch/x86/entry/syscalls/syscall_64.tbl").read_text()
    used = {int(line.split()[0]) for line in table.splitlines() if line[:1].isdigit()}
    assert max(n for n in used if n < 512) == NR - 1
    generic = (shipped / "include/uapi/asm-generic/unistd.h").read_text()
    assert f"#define __NR_syscalls {NR}" in generic


@pytest.mark.parametrize("series", SERIES)
def test_syscall_nr_script(series: str) -> None:
    out = subprocess.run(
        [str(KERNEL_DIR / "syscall-nr.sh"), series], capture_output=True, text=True, check=True
    )
    assert out.stdout == f"{NR}\n"


def test_readme_sed_one_liner() -> None:
    readme = (KERNEL_DIR / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("sed -n "))
    out = subprocess.run(
        ["sh", "-c", line], cwd=KERNEL_DIR.parents[1], capture_output=True, text=True, check=True
    )
    assert out.stdout == f"{NR}\n"


# ---- config fragments ---------------------------------------------------------------------

REQUIRED_Y = (
    "64BIT",
    "SMP",
    "PRINTK",
    "TTY",
    "SERIAL_8250_CONSOLE",
    "BINFMT_ELF",
    "BINFMT_SCRIPT",
    "DEVTMPFS",
    "DEVTMPFS_MOUNT",
    "PROC_FS",
    "SYSFS",
    "TMPFS",
    "MULTIUSER",
    "FUTEX",
    "EPOLL",
    "BLK_DEV_INITRD",
    "PCI",
    "PCIEPORTBUS",
    "ACPI",
    "NUMA",
    "ACPI_NUMA",
    "ACPI_HMAT",
    "X86_64_ACPI_NUMA",
    "MEMORY_HOTPLUG",
    "MEMORY_HOTREMOVE",
    "MIGRATION",
    "COMPACTION",
    "TRANSPARENT_HUGEPAGE",
    "HUGETLBFS",
    "ZONE_DEVICE",
    "PROC_PAGE_MONITOR",
    "CXL_BUS",
    "CXL_PCI",
    "CXL_ACPI",
    "CXL_MEM",
    "CXL_PORT",
    "CXL_REGION",
    "CXL_REGION_INVALIDATION_TEST",
    "DAX",
    "DEV_DAX",
    "DEV_DAX_CXL",
    "DEV_DAX_KMEM",
    "MEMCG",
    "CGROUPS",
    "CPUSETS",
    "USER_NS",
    "NAMESPACES",
    "KSM",
    "IDLE_PAGE_TRACKING",
    "IKCONFIG",
    "IKCONFIG_PROC",
    "NUMA_BALANCING",
    "VIRTIO_PCI",
    "VIRTIO_CONSOLE",
)


def test_base_fragment_has_what_the_guest_needs() -> None:
    wanted = parse_fragment(kernel.BASE_FRAGMENT)
    assert [f"CONFIG_{s}" for s in REQUIRED_Y if wanted.get(f"CONFIG_{s}") != "y"] == []
    assert wanted["CONFIG_MODULES"] == "n"
    assert "m" not in wanted.values()


def test_debug_fragment_adds_vm_debugging() -> None:
    wanted = merged_fragments([kernel.BASE_FRAGMENT, kernel.DEBUG_FRAGMENT])
    for name in ("DEBUG_VM", "DEBUG_VM_PGFLAGS", "DEBUG_LIST", "PAGE_POISONING"):
        assert wanted[f"CONFIG_{name}"] == "y"


def test_fragment_parser_rejects_typos(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fragment"
    bad.write_text("CONFIG_A=y\nCONFIG_B y\n#CONFIG_C is not set\nCONFIG_A=n\n")
    with pytest.raises(KernelBuildError) as e:
        parse_fragment(bad)
    msg = str(e.value)
    assert f"{bad}:2:" in msg and f"{bad}:3:" in msg and f"{bad}:4: CONFIG_A is set twice" in msg


def test_missing_options_names_each_lost_symbol() -> None:
    wanted = {"CONFIG_A": "y", "CONFIG_B": "y", "CONFIG_C": "n", "CONFIG_D": "8"}
    config = {"CONFIG_A": "y", "CONFIG_C": "y", "CONFIG_D": "2"}
    assert missing_options(wanted, config) == [
        "CONFIG_B: wanted y, got not set",
        "CONFIG_C: wanted not set, got y",
        "CONFIG_D: wanted 8, got 2",
    ]


# ---- switching series in the shared source tree -----------------------------------------------


def test_switching_series_rewrites_only_what_differs(shipped: Path, tmp_path: Path) -> None:
    src = _SourceTree(tmp_path / "src")
    all_paths = sorted({p for s in SERIES for p in _touched(s)})
    _copy_shipped(shipped, src.tree, all_paths)
    src.pristine.mkdir(parents=True)
    src.managed_list.write_text("")

    v1, v2 = series_patches("v1"), series_patches("v2")
    assert set(_apply_series(src, v1, "v1", None)) == set(_touched("v1"))
    table = src.tree / "arch/x86/entry/syscalls/syscall_64.tbl"
    table_mtime = table.stat().st_mtime_ns

    changed = set(_apply_series(src, v2, "v2", None))
    assert "mm/migrate.c" in changed
    assert "tools/testing/selftests/mm/move_phys_pages.c" in changed
    assert not changed & {p for p in _touched("v1") if p != "mm/migrate.c"}
    assert table.stat().st_mtime_ns == table_mtime
    assert _apply_series(src, v2, "v2", None) == []

    _apply_series(src, v1, "v1", None)
    assert not (src.tree / "tools/testing/selftests/mm/move_phys_pages.c").exists()
    makefile = "tools/testing/selftests/mm/Makefile"
    assert (src.tree / makefile).read_bytes() == (shipped / makefile).read_bytes()
    assert table.stat().st_mtime_ns == table_mtime
