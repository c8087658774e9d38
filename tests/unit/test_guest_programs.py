"""The guest programs (mpp, hotcold), built and run on the host.

The host is Linux too, usually with one NUMA node and without the
move_phys_pages syscall, so these check what can be checked here: the build
and its cache, the syscall number's single source, pagemap translation with
and without privilege, node status, the exact access counts of hotcold, the
file handshakes, and clean JSON for every error. Moving pages between nodes
and the syscall itself are exercised in guest tests.

Root is needed (PFNs are hidden from others, and the unprivileged check
switches to uid 1000); tests that need it skip with that reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cxlrig.images import programs
from cxlrig.images.programs import SOURCE_DIR, ProgramsBuildError, build_guest_programs

PAGE = 4096
TIMEOUT = 60  # seconds for any one program run; they take milliseconds

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (pagemap PFNs, setpriv)")


def _kernel_has_move_phys_pages() -> bool:
    with open("/proc/kallsyms", encoding="ascii", errors="replace") as f:
        return any("sys_move_phys_pages" in line for line in f)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXLRIG_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def bindir(cache: Path) -> Iterator[Path]:
    """The real build, copied where uid 1000 can run it too (pytest's own
    temporary directories are private to root)."""
    built = build_guest_programs()
    public = Path(tempfile.mkdtemp(prefix="guest-programs-"))
    try:
        public.chmod(0o755)
        for name in ("mpp", "hotcold"):
            shutil.copy2(built / name, public / name)
            (public / name).chmod(0o755)
        yield public
    finally:
        shutil.rmtree(public, ignore_errors=True)


def run(
    bindir: Path,
    *args: str,
    expect_rc: int = 0,
    user: int | None = None,
    stdin: str | None = None,
) -> dict[str, Any]:
    """Runs a program, checks its exit status and returns its one JSON line."""
    cmd = [str(bindir / args[0]), *args[1:]]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    proc = subprocess.run(
        cmd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == expect_rc, (cmd, proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result: dict[str, Any] = json.loads(lines[0])
    return result


def is_static_elf(path: Path) -> bool:
    """True when the ELF64 file has no PT_INTERP, i.e. no dynamic loader."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not an ELF64 file"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    pt_interp = 3
    return all(
        struct.unpack_from("<I", data, phoff + i * phentsize)[0] != pt_interp for i in range(phnum)
    )


# ---- the build -------------------------------------------------------------


def test_build_is_static_and_cached(bindir: Path, cache: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_guest_programs()
    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}

    def no_make(*args: object, **kwargs: object) -> str:
        raise AssertionError("a cache hit ran make")

    # A cache hit is a lookup: make never runs and nothing is rewritten.
    monkeypatch.setattr(programs, "run_make", no_make)
    again = build_guest_programs()
    assert again == first
    assert first.parent == cache / "programs"
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == stamps
    for name in ("mpp", "hotcold"):
        assert is_static_elf(first / name)
        assert os.access(first / name, os.X_OK)
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["key"] == first.name
    assert manifest["patches"], "the syscall-number patch is part of the key"


def _copy_tree(tmp_path: Path, patches: dict[str, str]) -> Path:
    """guest/programs plus a made-up patch series, laid out as in the repo."""
    src = tmp_path / "guest" / "programs"
    shutil.copytree(SOURCE_DIR, src, ignore=shutil.ignore_patterns("out"))
    pdir = tmp_path / "guest" / "kernel" / "patches"
    pdir.mkdir(parents=True)
    for name, text in patches.items():
        (pdir / name).parent.mkdir(parents=True, exist_ok=True)
        (pdir / name).write_text(text)
    return src


def _table_patch(nr64: int, nr32: int) -> str:
    return (
        "--- a/arch/x86/entry/syscalls/syscall_32.tbl\n"
        "+++ b/arch/x86/entry/syscalls/syscall_32.tbl\n"
        "@@ -1,1 +1,2 @@\n"
        f"+{nr32}\ti386\tmove_phys_pages\t\tsys_move_phys_pages\n"
        "--- a/arch/x86/entry/syscalls/syscall_64.tbl\n"
        "+++ b/arch/x86/entry/syscalls/syscall_64.tbl\n"
        "@@ -1,1 +1,2 @@\n"
        " 462\tcommon\tmseal\t\t\tsys_mseal\n"
        f"+{nr64}\tcommon\tmove_phys_pages\t\tsys_move_phys_pages\n"
    )


def test_syscall_number_comes_from_the_x86_64_table_hunk(tmp_path: Path, cache: Path) -> None:
    src = _copy_tree(tmp_path, {"v9/0001-syscall.patch": _table_patch(471, 472)})
    out = build_guest_programs(source_dir=src)
    info = run(out, "mpp", "info")
    assert info["move_phys_pages"]["nr"] == 471
    # The i386 program makes the i386 table's call (the shipped patches give
    # both the same number, which once hid that mpp32 took the x86_64 one).
    assert run(out, "mpp32", "info")["move_phys_pages"]["nr"] == 472
    # Editing the patch changes the key and so the build.
    (src.parent / "kernel" / "patches" / "v9" / "0001-syscall.patch").write_text(
        _table_patch(473, 474)
    )
    rebuilt = build_guest_programs(source_dir=src)
    assert rebuilt != out
    assert run(rebuilt, "mpp", "info")["move_phys_pages"]["nr"] == 473


def test_build_without_the_patch_fails_clearly(tmp_path: Path, cache: Path) -> None:
    src = _copy_tree(tmp_path, {})
    with pytest.raises(ProgramsBuildError) as err:
        build_guest_programs(source_dir=src)
    assert "no move_phys_pages line" in str(err.value)
    assert "NR_MOVE_PHYS_PAGES=463" in err.value.output


def test_patches_that_disagree_fail(tmp_path: Path, cache: Path) -> None:
    src = _copy_tree(
        tmp_path,
        {"v1/0001.patch": _table_patch(463, 500), "v2/0001.patch": _table_patch(464, 500)},
    )
    with pytest.raises(ProgramsBuildError, match="disagree"):
        build_guest_programs(source_dir=src)


def test_compiler_errors_are_reported(tmp_path: Path, cache: Path) -> None:
    src = _copy_tree(tmp_path, {"v1/0001.patch": _table_patch(463, 500)})
    (src / "util.c").write_text((src / "util.c").read_text() + "\nint broken(void) { return x; }\n")
    with pytest.raises(ProgramsBuildError) as err:
        build_guest_programs(source_dir=src)
    assert "'x' undeclared" in err.value.output
    assert "util.c" in str(err.value)


def test_nothing_is_written_into_the_source_dir(tmp_path: Path, cache: Path) -> None:
    src = _copy_tree(tmp_path, {"v1/0001.patch": _table_patch(463, 500)})
    before = sorted(p.name for p in src.iterdir())
    build_guest_programs(source_dir=src)
    assert sorted(p.name for p in src.iterdir()) == before


# ---- mpp ---------------------------------------------------------------------


@needs_root
def test_anon_pages_translate_to_frames(bindir: Path) -> None:
    out = run(bindir, "mpp", "alloc", "--pages", "4")
    assert out["ok"] is True and out["uid"] == 0
    pages = out["pages"]
    assert len(pages) == 4
    for page in pages:
        assert page["present"] is True
        assert page["pfn"] > 0
        va = int(page["va"], 16)
        assert int(page["pa"], 16) == page["pfn"] * PAGE + va % PAGE
        assert page["node"] == 0
        assert page["mapcount"] == 1
        assert "anon" in page["flags"]
    assert len({p["pfn"] for p in pages}) == 4
    assert out["node_counts"] == {"0": 4}
    assert out["data_ok"] is True


@needs_root
def test_cow_and_shared_pages_are_mapped_by_every_mapper(bindir: Path) -> None:
    cow = run(bindir, "mpp", "alloc", "--kind", "cow")
    assert cow["region"]["mappers"] == 2 and len(cow["region"]["mapper_pids"]) == 1
    assert cow["pages"][0]["mapcount"] == 2
    assert cow["pages"][0]["exclusive"] is False
    for kind in ("shmem", "file"):
        out = run(bindir, "mpp", "alloc", "--kind", kind, "--mappers", "3", "--pages", "2")
        assert [p["mapcount"] for p in out["pages"]] == [3, 3], kind
        assert all(p["file_or_shared"] for p in out["pages"])


@needs_root
def test_a_writing_mapper_breaks_copy_on_write(bindir: Path) -> None:
    out = run(bindir, "mpp", "alloc", "--kind", "cow", "--mapper-writes", "--pages", "2")
    assert out["region"]["mapper_writes"] is True
    # The child wrote: it has its own copies, the parent's pages are its alone.
    assert [p["mapcount"] for p in out["pages"]] == [1, 1]
    assert all(p["exclusive"] for p in out["pages"])
    bad = subprocess.run([str(bindir / "mpp"), "alloc", "--kind", "cow", "--mapper-cgroup",
                          "/nonexistent"], capture_output=True, text=True, timeout=TIMEOUT,
                         check=False)
    assert bad.returncode == 1 and "--mapper-cgroup" in json.loads(bad.stdout)["error"]


@needs_root
def test_thp_reports_tail_pages_or_says_why_not(bindir: Path) -> None:
    out = run(bindir, "mpp", "alloc", "--kind", "thp", "--subpage", "5")
    region = out["region"]
    assert region["unit_bytes"] == 2 * 1024 * 1024
    page = out["pages"][0]
    assert int(page["va"], 16) == int(region["base"], 16) + 5 * PAGE
    if region["anon_huge_kb"] == 0:
        assert "4 KiB pages" in region["warning"]
    else:
        assert region["anon_huge_kb"] == 2048
        assert {"thp", "compound_tail"} <= set(page["flags"])


def _hugetlb_free() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("HugePages_Free:"):
            return int(line.split()[1])
    return 0


@needs_root
def test_hugetlb_allocates_or_fails_with_a_hint(bindir: Path) -> None:
    if _hugetlb_free() >= 1:
        out = run(bindir, "mpp", "alloc", "--kind", "hugetlb")
        assert "huge" in out["pages"][0]["flags"]
    else:
        out = run(bindir, "mpp", "alloc", "--kind", "hugetlb", expect_rc=1)
        assert out["ok"] is False
        assert out["errno"] == "ENOMEM"
        assert "nr_hugepages" in out["error"]


@needs_root
def test_hold_and_status_of_another_process(bindir: Path, tmp_path: Path) -> None:
    go, ready = tmp_path / "go", tmp_path / "ready"
    holder = subprocess.Popen(
        [str(bindir / "mpp"), "hold", "--pages", "2", "--until-file", str(go),
         "--ready-file", str(ready), "--timeout", str(TIMEOUT)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        first = json.loads(holder.stdout.readline())
        assert json.loads(ready.read_text()) == first
        assert first["phase"] == "before"
        vas = ",".join(p["va"] for p in first["pages"])
        status = run(bindir, "mpp", "virt", "--pid", str(first["pid"]), "--va", vas, "--status")
        call = status["first_call"]
        assert call["syscall"] == "move_pages" and call["ret"] == 0
        assert call["status"] == [0, 0]
        assert call["status_text"] == ["node 0", "node 0"]
        assert [p["pfn"] for p in status["before"]["pages"]] == [p["pfn"] for p in first["pages"]]
        go.touch()
        second = json.loads(holder.stdout.readline())
        assert holder.wait(TIMEOUT) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert second["phase"] == "after" and second["wait"] == "released"
    assert second["pfn_changed_count"] == 0 and second["node_changed_count"] == 0
    assert [c["pfn_changed"] for c in second["changes"]] == [False, False]
    assert not go.exists(), "the go file is consumed so it can signal again"


@needs_root
def test_hold_times_out_with_an_error_report(bindir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(bindir / "mpp"), "hold", "--until-file", str(tmp_path / "never"),
         "--timeout", "1", "--summary"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    before, after = (json.loads(line) for line in proc.stdout.splitlines())
    assert before["ok"] is True
    assert after["ok"] is False and after["wait"] == "timeout"


@needs_root
def test_move_pages_timing(bindir: Path) -> None:
    out = run(bindir, "mpp", "move", "--via", "virt", "--to", "0", "--pages", "3",
              "--repeat", "5")  # fmt: skip
    first = out["first_call"]
    assert first["syscall"] == "move_pages"
    assert first["ret"] == 0 and first["status"] == [0, 0, 0]
    timing = out["timing"]
    assert timing["repeat"] == 5 and len(timing["ns"]) == 5
    assert 0 < timing["min_ns"] <= timing["median_ns"] <= timing["max_ns"]
    assert out["after"]["node_counts"] == {"0": 3}


@needs_root
def test_move_phys_pages_is_enosys_on_the_host(bindir: Path) -> None:
    if _kernel_has_move_phys_pages():
        pytest.skip("this host kernel has move_phys_pages")
    out = run(bindir, "mpp", "phys", "--pa", "0x1000,0x2000", "--to", "0")
    call = out["first_call"]
    assert call["syscall"] == "move_phys_pages"
    assert call["ret"] == -1 and call["errno"] == "ENOSYS"
    assert call["status"] == [-9999, -9999]
    assert call["status_text"] == ["untouched", "untouched"]
    assert out["move_phys_pages"]["nr"] == 463
    # Own pages through their physical addresses: same answer, pages stay.
    own = run(bindir, "mpp", "move", "--to", "0", "--pages", "2")
    assert own["first_call"]["errno"] == "ENOSYS"
    assert own["first_call"]["addrs"] == [p["pa"] for p in own["before"]["pages"]]
    assert own["data_ok"] is True


@needs_root
def test_unprivileged_user_sees_no_frames(bindir: Path) -> None:
    out = run(bindir, "mpp", "alloc", "--pages", "2", user=1000)
    assert out["uid"] == 1000 and out["cap_sys_admin"] is False
    for page in out["pages"]:
        assert page["present"] is True
        assert page["pfn"] is None and page["pa"] is None
        assert "CAP_SYS_ADMIN" in page["pfn_reason"]
        assert page["node"] == 0
        assert "flags" not in page
    phys = run(bindir, "mpp", "phys", "--pa", "0x1000", "--status", user=1000)
    assert phys["first_call"]["errno"] == "ENOSYS"
    assert "frames_before" not in phys
    moved = run(bindir, "mpp", "move", "--to", "0", user=1000, expect_rc=1)
    assert "physical address" in moved["error"]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["alloc", "--pages", "0"],
        ["alloc", "--pages", "12x"],
        ["alloc", "--kind", "giant"],
        ["alloc", "--pa", "0x1000"],
        ["alloc", "--subpage", "1"],
        ["move", "--pages", "1"],
        ["phys", "--pa", "0x1000"],
        ["phys", "--pa", "0x1000", "--to", "0", "--status"],
        ["phys", "--pa", "0x1000,0x2000", "--to", "0,1,2"],
        ["phys", "--pa", "nothex", "--status"],
        ["hold"],
        ["hold", "--until-stdin", "--until-signal"],
        ["virt", "--va", "0x1000", "--status", "--stale"],
        ["fork", "--to", "1"],
        ["alloc", "--mapper-writes"],
        ["alloc", "--mapper-cgroup", "/sys/fs/cgroup/x", "--mappers", "1"],
        ["alloc", "--pages", "1", "--pages", "2"],
        ["alloc", "extra"],
    ],
)
def test_usage_errors_exit_2_with_json(bindir: Path, args: list[str]) -> None:
    proc = subprocess.run(
        [str(bindir / "mpp"), *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert proc.returncode == 2, proc.stdout
    out = json.loads(proc.stdout)
    assert out["ok"] is False and out["usage_error"] is True and out["error"]
    assert "usage: mpp" in proc.stderr


def test_out_file_holds_the_report(bindir: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    out = run(bindir, "mpp", "info", "--out", str(target))
    assert json.loads(target.read_text()) == out
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


# ---- hotcold -------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("pattern", ["seq", "stride", "random"])
@pytest.mark.parametrize(("reads", "writes"), [(3, 1), (1, 0), (0, 1), (2, 3)])
def test_hotcold_counts_are_exact(bindir: Path, pattern: str, reads: int, writes: int) -> None:
    iterations, ratio, hot, cold, step = 3, 5, 2, 3, 128
    extra = {"stride": ["--stride", "1024"], "random": ["--seed", "42"]}.get(pattern, [])
    out = run(bindir, "hotcold", "--pattern", pattern, "--iterations", str(iterations),
              "--ratio", str(ratio), "--hot-pages", str(hot), "--cold-pages", str(cold),
              "--hot-node", "0", "--cold-node", "0", "--step", str(step),
              "--mix", f"{reads}:{writes}", *extra)  # fmt: skip
    assert out["iterations_done"] == [iterations]
    slots_per_page = PAGE // step
    for name, pages, passes in (("hot", hot, iterations * ratio), ("cold", cold, iterations)):
        s = out["sets"][name]
        accesses = passes * pages * slots_per_page
        assert s["passes"] == passes
        assert s["loads"] + s["stores"] == accesses
        assert s["stores"] == accesses * writes // (reads + writes)
        assert s["placement_ok"] is True and s["node_counts"] == {"0": pages}
        assert len(s["pages"]) == pages and all(p["pfn"] for p in s["pages"])
        expected_per_page = None if pattern == "random" else slots_per_page
        assert s["accesses_per_page_per_pass"] == expected_per_page
    assert out["init_stores"] == hot + cold


def test_hotcold_seconds_mode_counts_whole_iterations(bindir: Path) -> None:
    out = run(bindir, "hotcold", "--seconds", "1", "--hot-pages", "1", "--cold-pages", "1",
              "--ratio", "2")  # fmt: skip
    done = out["iterations_done"][0]
    assert done >= 1
    hot = out["sets"]["hot"]
    assert hot["loads"] + hot["stores"] == done * 2 * 64
    assert out["elapsed_ns"] >= 1_000_000_000


def test_hotcold_pauses_between_phases(bindir: Path, tmp_path: Path) -> None:
    pause, ready = tmp_path / "pause", tmp_path / "ready"
    proc = subprocess.Popen(
        [str(bindir / "hotcold"), "--phases", "2", "--iterations", "2", "--hot-pages", "1",
         "--cold-pages", "1", "--pause-file", str(pause), "--ready-file", str(ready),
         "--timeout", str(TIMEOUT)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for at in ("before-phase-1", "after-phase-1", "after-phase-2"):
            event = json.loads(proc.stdout.readline())
            assert event["event"] == "pause" and event["at"] == at
            assert json.loads(ready.read_text())["at"] == at
            assert set(event["sets"]) == {"hot", "cold"}
            ready.unlink()
            pause.touch()
        final = json.loads(proc.stdout.readline())
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert final["iterations_done"] == [2, 2]
    phases = final["sets"]["hot"]["phases"]
    assert [p["loads"] + p["stores"] for p in phases] == [2 * 8 * 64, 2 * 8 * 64]
    assert not pause.exists()


def test_hotcold_swap_at_moves_the_hot_set(bindir: Path) -> None:
    out = run(bindir, "hotcold", "--phases", "3", "--iterations", "2", "--ratio", "3",
              "--hot-pages", "1", "--cold-pages", "2", "--swap-at", "2")  # fmt: skip
    assert out["config"]["swap_at"] == 2
    assert [p["passes"] for p in out["sets"]["hot"]["phases"]] == [6, 2, 2]
    assert [p["passes"] for p in out["sets"]["cold"]["phases"]] == [2, 6, 6]


def test_hotcold_cold_ms_paces_the_cold_set_by_the_clock(bindir: Path) -> None:
    out = run(bindir, "hotcold", "--seconds", "1", "--cold-ms", "200", "--hot-pages", "1",
              "--cold-pages", "1")  # fmt: skip
    cold, hot = out["sets"]["cold"], out["sets"]["hot"]
    # One pass at the start, then at most one per 200 ms of the run.
    assert 1 <= cold["passes"] <= out["elapsed_ns"] // 200_000_000 + 1
    assert hot["passes"] == 8 * out["iterations_done"][0]
    assert out["config"]["cold_ms"] == 200


@needs_root
def test_hotcold_unbind_leaves_the_pages_where_they_were_placed(bindir: Path) -> None:
    out = run(bindir, "hotcold", "--iterations", "1", "--hot-pages", "2", "--cold-pages", "2",
              "--hot-node", "0", "--cold-node", "0", "--unbind")  # fmt: skip
    assert out["config"]["unbind"] is True
    for name in ("hot", "cold"):
        assert out["sets"][name]["placement_ok"] is True
        assert out["sets"][name]["node_counts"] == {"0": 2}


def test_hotcold_chase(bindir: Path) -> None:
    out = run(bindir, "hotcold", "chase", "--lines", "256", "--accesses", "5000", "--seed", "9")
    assert out["mode"] == "chase"
    assert out["loads"] == 5000
    assert out["ns_per_access"] > 0
    assert len(out["pages"]) == 256 * 64 // PAGE
    assert out["init_stores"] == 4 + 256


@pytest.mark.parametrize(
    "args",
    [
        ["--pattern", "zigzag"],
        ["--step", "12"],
        ["--pattern", "stride", "--stride", "100"],
        ["--stride", "8192"],
        ["--seconds", "1", "--iterations", "2"],
        ["--mix", "3"],
        ["--mix", "0:0"],
        ["--phases", "33"],
        ["--swap-at", "1", "--phases", "2"],
        ["--swap-at", "3", "--phases", "2"],
        ["--cold-ms", "-1"],
        ["--ready-file", "/tmp/x"],
        ["chase", "--hot-pages", "1"],
        ["walk"],
    ],
)
def test_hotcold_usage_errors(bindir: Path, args: list[str]) -> None:
    proc = subprocess.run(
        [str(bindir / "hotcold"), *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    out = json.loads(proc.stdout)
    assert out["usage_error"] is True
    assert "usage: hotcold" in proc.stderr


def test_hotcold_bad_node_is_an_error(bindir: Path) -> None:
    out = run(bindir, "hotcold", "--hot-node", "1000", expect_rc=1)
    assert out["ok"] is False and out["errno"] == "EINVAL"
    assert "mbind" in out["error"]
