"""The move_phys_pages series and config fragments, checked without building.

The apply tests read the files the series touch straight out of Debian's
linux-source-6.12 tarball (a few seconds of xz), once per session.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cxlrig.images import kernel
from cxlrig.images.kernel import (
    KERNEL_DIR,
    SYSCALL_PATCH,
    VARIANTS,
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
from cxlrig.images.variants import (
    UnknownVariantError,
    VariantFileError,
    get_variant,
    load_series,
    split_patches,
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
        # git format-patch's first line. The all-zero commit (--zero-commit) is
        # out: 6.12's checkpatch.pl then reads context lines as added ones.
        assert re.match(r"From (?!0{40})[0-9a-f]{40} Mon Sep 17 00:00:00 2001\n", text), patch
        assert re.search(r"^From: .+ <.+@.+>$", text, re.M), patch
        subject = re.search(r"^Subject: \[PATCH (\d+)/(\d+)\] (.+)$", text, re.M)
        assert subject, patch
        assert (int(subject.group(1)), int(subject.group(2))) == (n, len(patches)), patch
        assert patch.name.startswith(f"{n:04d}-"), patch
        assert re.search(r"^Signed-off-by: ", text, re.M), patch
        assert "\n---\n" in text and "diff --git " in text, patch


def test_v2_starts_with_the_v1_patches() -> None:
    """The same patches, but for the one place the issue asked v2 to differ:
    v1's rmap walk lets every VMA it visits decide, as the RFC's did; v2 only
    the VMAs that map the folio (page_vma_mapped_walk(), -ENOENT unmapped)."""
    def body(p: Path) -> str:
        text = p.read_text().split("\n", 1)[1]  # past "From <commit>", which differs
        return re.sub(r"^Subject: \[PATCH \d+/\d+\]", "Subject:", text, flags=re.M)

    v1, v2 = series_patches("v1"), series_patches("v2")
    assert len(v2) > len(v1)
    for a, b in zip(v1, v2, strict=False):
        assert a.name == b.name
        if not a.name.startswith("0001-"):
            assert body(a) == body(b), f"{b} differs from {a} beyond its numbering"
            continue
        code_a, code_b = (body(p).split("\n---\n", 1)[1] for p in (a, b))
        changed = [line[1:].strip() for line in difflib.unified_diff(
            code_a.splitlines(), code_b.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        walk = ("page_vma_mapped_walk", "folio_mapped", "DEFINE_FOLIO_VMA_WALK",
                "return true;", "return -ENOENT;")
        # Comments, hunk headers, the diffstat and the walk's own lines may differ.
        skip = ("*", "/*", "index ", "@@ ", "mm/migrate.c ", "3 files changed")
        odd = [c for c in (c.lstrip("+- \t") for c in changed)
               if c and not c.startswith(skip) and not any(w in c for w in walk)]
        assert not odd, f"{b} differs from {a} beyond the rmap walk: {odd}"
        assert any("page_vma_mapped_walk" in c for c in changed)


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


# ---- variants as data: users' series, mboxes, declarations --------------------------------


def _fresh_tree(shipped: Path, root: Path) -> _SourceTree:
    src = _SourceTree(root)
    _copy_shipped(shipped, src.tree, sorted({p for s in SERIES for p in _touched(s)}))
    src.pristine.mkdir(parents=True)
    src.managed_list.write_text("")
    return src


def _tree_files(src: _SourceTree, paths: list[str]) -> dict[str, bytes]:
    return {p: (src.tree / p).read_bytes() for p in paths if (src.tree / p).is_file()}


def test_the_shipped_variants_are_the_patch_directories() -> None:
    assert VARIANTS == ("debug", "v1", "v2")
    debug, v2 = get_variant("debug"), get_variant("v2")
    assert debug.patches == v2.patches
    assert debug.fragments == (kernel.BASE_FRAGMENT, kernel.DEBUG_FRAGMENT)
    assert v2.fragments == (kernel.BASE_FRAGMENT,)
    assert [v.judge_as("any") for v in (debug, v2)] == ["debug", "v2"]
    with pytest.raises(UnknownVariantError, match="known: debug, v1, v2"):
        get_variant("v3")


def test_an_mbox_applies_as_the_patch_files_do(shipped: Path, tmp_path: Path) -> None:
    """format-patch --stdout output: one file, every patch of the series in it."""
    mbox = tmp_path / "v2-again.mbox"
    mbox.write_bytes(b"".join(p.read_bytes() for p in series_patches("v2")))
    by_files = _fresh_tree(shipped, tmp_path / "a")
    by_mbox = _fresh_tree(shipped, tmp_path / "b")
    _apply_series(by_files, series_patches("v2"), "v2", None)
    _apply_series(by_mbox, (mbox,), "v2-again", None)
    paths = _touched("v2")
    assert _tree_files(by_mbox, paths) == _tree_files(by_files, paths)
    assert "capable(CAP_SYS_ADMIN)" in (by_mbox.tree / "mm/migrate.c").read_text()


def test_a_mail_archive_mbox_decodes_and_skips_the_cover_letter(shipped: Path,
                                                                 tmp_path: Path) -> None:
    """As a list archive serves a thread: a cover letter, patches quoted-printable."""
    import email
    import email.policy
    from email.generator import BytesGenerator
    from io import BytesIO

    out = BytesIO()
    cover = email.message.EmailMessage()
    cover["From"], cover["Subject"] = "A <a@example.org>", "[PATCH 0/2] move_phys_pages"
    cover.set_content("Two patches.\n")
    messages = [cover]
    for patch in series_patches("v1"):
        msg = email.message_from_bytes(patch.read_bytes(), policy=email.policy.default)
        body = msg.get_content()
        qp = email.message.EmailMessage()
        qp["From"], qp["Subject"] = msg["From"], msg["Subject"]
        qp.set_content(body, cte="quoted-printable")
        messages.append(qp)
    for msg in messages:
        out.write(b"From mboxrd@z Thu Jan  1 00:00:00 1970\n")
        BytesGenerator(out, policy=email.policy.SMTP.clone(linesep="\n")).flatten(msg)
        out.write(b"\n")
    mbox = tmp_path / "thread.mbox"
    mbox.write_bytes(out.getvalue())
    assert b"=3D" in mbox.read_bytes() or b"=\n" in mbox.read_bytes()  # really encoded

    diffs = split_patches((mbox,), tmp_path / "split")
    assert [d.subject for d in diffs] == [
        "mm/migrate: add move_phys_pages() to migrate pages by physical address",
        "syscalls: wire up move_phys_pages"]
    by_files = _fresh_tree(shipped, tmp_path / "a")
    by_mbox = _fresh_tree(shipped, tmp_path / "b")
    _apply_series(by_files, series_patches("v1"), "v1", None)
    _apply_series(by_mbox, (mbox,), "thread", None)
    assert _tree_files(by_mbox, _touched("v1")) == _tree_files(by_files, _touched("v1"))


def test_a_series_that_does_not_apply_names_the_patch_and_the_hunk(shipped: Path,
                                                                   tmp_path: Path) -> None:
    first = series_patches("v1")[0]
    text = first.read_text()
    # A context line of the first mm/migrate.c hunk that the tree does not have.
    lines = text.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln == "+++ b/mm/migrate.c\n")
    ctx = next(i for i in range(start, len(lines)) if lines[i].startswith(" ")
               and lines[i].strip())
    lines[ctx] = " this line is not in mm/migrate.c\n"
    bad = tmp_path / first.name
    bad.write_text("".join(lines))
    with pytest.raises(KernelBuildError) as info:
        _apply_series(_fresh_tree(shipped, tmp_path / "t"), (bad, series_patches("v1")[1]),
                      "mine", None)
    msg = str(info.value)
    assert f"series mine: {first.name} (mm/migrate: add move_phys_pages()" in msg, msg
    assert re.search(r"mm/migrate\.c: hunk #1 \(at line \d+\)", msg), msg


def test_a_users_series_declares_how_to_judge_it(tmp_path: Path) -> None:
    series = tmp_path / "nocap"
    series.mkdir()
    for p in series_patches("v2"):
        if "CAP_SYS_ADMIN" not in p.name:
            shutil.copy(p, series / p.name)
    v = load_series(series)
    assert (v.name, v.like, v.origin) == ("nocap", None, series)
    assert [p.name[:4] for p in v.patches] == ["0001", "0002", "0004", "0005"]
    assert v.judge_as("unprivileged-caller") is None

    (series / "variant.yaml").write_text("like: v1\nscenarios:\n  thp: v2\n  ksm: null\n")
    v = load_series(series)
    assert [v.judge_as(s) for s in ("unprivileged-caller", "thp", "ksm")] == ["v1", "v2", None]

    (series / "variant.yaml").write_text("like: v1\nscenarios:\n  thp: v9\n")
    with pytest.raises(VariantFileError) as info:
        load_series(series)
    assert str(info.value) == (f"{series}/variant.yaml:3:3: scenarios.thp: 'v9' is not a "
                               "variant to judge by (debug, v1, v2)")
    (series / "variant.yaml").write_text("like: v1\nfragment: [x]\n")
    with pytest.raises(VariantFileError, match=r"variant.yaml:2:1: fragment: "):
        load_series(series)


def test_an_mbox_series_and_its_declaration(tmp_path: Path) -> None:
    mbox = tmp_path / "rfc-v3.mbox"
    mbox.write_bytes(b"".join(p.read_bytes() for p in series_patches("v1")))
    (tmp_path / "rfc-v3.variant.yaml").write_text("like: v1\n")
    v = load_series(mbox)
    assert (v.name, v.like, v.patches) == ("rfc-v3", "v1", (mbox,))


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing", "no such file or directory"),
    (lambda d: (d / "v2").mkdir() or d / "v2", "'v2' is the name of a built-in variant"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "has no *.patch or *.mbox files"),
])
def test_a_series_that_cannot_be_used_says_why(make: Callable[[Path], Path], message: str,
                                               tmp_path: Path) -> None:
    with pytest.raises(VariantFileError, match=re.escape(message)):
        load_series(make(tmp_path))


# ---- checkpatch.pl --strict from the 6.12 tree ----------------------------------------


@pytest.mark.parametrize("series", SERIES)
def test_checkpatch_strict_finds_no_error(series: str) -> None:
    results = kernel.checkpatch(series)
    assert [r.patch for r in results] == list(series_patches(series))
    for r in results:
        assert r.errors == 0, r.output


def test_checkpatch_counts_a_style_error(tmp_path: Path) -> None:
    """A trailing blank on an added line is an error, and the CLI exits 1 on it."""
    series = tmp_path / "mine"
    series.mkdir()
    for patch in series_patches("v1"):
        shutil.copy(patch, series / patch.name)
    first = series / series_patches("v1")[0].name
    text = first.read_text()
    added = "+\tint node;\n"
    assert added in text
    first.write_text(text.replace(added, "+\tint node; \n", 1))
    results = kernel.checkpatch(load_series(series))
    assert results[0].errors == 1 and "trailing whitespace" in results[0].output
    assert results[1].errors == 0
    from cxlrig.cli import main
    assert main(["kernel", "checkpatch", "--series", str(series)]) == 1
