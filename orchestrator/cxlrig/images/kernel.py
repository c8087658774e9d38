"""Guest kernels: Debian's linux-source-6.12 with one move_phys_pages series.

A variant is a patch series plus config fragments (see guest/kernel/README.md).
Images are cached under ``cache_dir()/kernel/images/<key>/`` where the key
hashes everything that decides the image: the source tarball's identity, the
series, the fragments, the compiler and this module's recipe version.

Building is arranged so that a variant switch costs seconds, not minutes:

* the tarball is extracted once into one source tree, shared by every variant;
* a series is applied by computing, in a scratch directory, what each file it
  touches should contain, and rewriting only the files whose content differs.
  Files the series leave alone keep their mtimes, so make rebuilds little;
* one ``O=`` directory per set of fragments, so v1 and v2 (same config)
  share objects and debug has its own.

Everything that writes to the cache runs under one ``flock``: variants share
the source tree, so two builds must never overlap.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cxlrig.errors import CxlrigError
from cxlrig.files import write_atomic
from cxlrig.images.cache import digest, toolchain_identity
from cxlrig.images.variants import (
    BASE_FRAGMENT,
    DEBUG_FRAGMENT,
    KERNEL_DIR,
    PATCHES_DIR,
    VARIANTS,
    Patch,
    UnknownVariantError,
    Variant,
    get_variant,
    load_series,
    resolve_variant,
    split_patches,
)
from cxlrig.paths import cache_dir, require_data
from cxlrig.timeouts import TIMEOUTS

log = logging.getLogger(__name__)

# The variants live in cxlrig.images.variants; these names are part of this
# module's interface too.
__all__ = [
    "BASE_FRAGMENT",
    "DEBUG_FRAGMENT",
    "DEFAULT_TARBALL",
    "KERNEL_DIR",
    "PATCHES_DIR",
    "SYSCALL_PATCH",
    "VARIANTS",
    "KernelBuildError",
    "UnknownVariantError",
    "Variant",
    "build_kernel",
    "get_variant",
    "kernel_path",
    "load_series",
    "merged_fragments",
    "missing_options",
    "parse_fragment",
    "patch_paths",
    "read_config",
    "series_patches",
    "syscall_number",
]

#: Debian's linux-source-6.12 package installs it here.
DEFAULT_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")

#: The patch of every series that wires the system call into the tables; its
#: name is stable so that the guest programs can read the number from it.
SYSCALL_PATCH = "0002-syscalls-wire-up-move_phys_pages.patch"
SYSCALL_NAME = "move_phys_pages"

ARCH = "x86_64"
IMAGE_IN_O = Path("arch/x86/boot/bzImage")

#: Bump when the way an image is made changes without any input changing.
_RECIPE = "1"

_TAIL_LINES = 30
_PROGRESS_INTERVAL_S = 1.0

ProgressFn = Callable[[str], None]


class KernelBuildError(CxlrigError):
    """A kernel could not be built; names the step, the log and its tail."""

    def __init__(self, what: str, log_path: Path | None = None, tail: Sequence[str] = ()) -> None:
        self.what = what
        self.log_path = log_path
        self.tail = tuple(tail)
        parts = [what]
        if log_path is not None:
            parts.append(f"full log: {log_path}")
        if self.tail:
            parts.append(f"last {len(self.tail)} lines:\n" + "\n".join(self.tail))
        super().__init__("\n".join(parts))


def series_patches(series: str) -> tuple[Path, ...]:
    """The patch files of the shipped variant ``series``, in the order they apply."""
    return get_variant(series).patches


_DIFF_GIT = re.compile(r"^diff --git a/(\S+) b/(\S+)$")


def patch_paths(patch: Path) -> tuple[str, ...]:
    """The source paths one git-style patch touches (created, changed or deleted)."""
    paths: list[str] = []
    for line in patch.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _DIFF_GIT.match(line)
        if m:
            for p in m.groups():
                if p not in paths:
                    paths.append(p)
    if not paths:
        raise KernelBuildError(f"{patch}: no 'diff --git' header: not a git patch")
    return tuple(paths)


_TBL_HUNK = re.compile(r"^\+(\d+)\s+(\w+)\s+(\w+)\s+(\w+)\s*$")


def syscall_number(series: str = "v1") -> int:
    """The x86_64 number of move_phys_pages, read from the series' table hunk."""
    patch = PATCHES_DIR / series / SYSCALL_PATCH
    in_table = False
    for line in patch.read_text(encoding="utf-8").splitlines():
        if line.startswith("+++ "):
            in_table = line == "+++ b/arch/x86/entry/syscalls/syscall_64.tbl"
            continue
        m = _TBL_HUNK.match(line) if in_table else None
        if m and m.group(3) == SYSCALL_NAME and m.group(2) in ("common", "64"):
            return int(m.group(1))
    raise KernelBuildError(f"{patch}: no syscall_64.tbl line adds {SYSCALL_NAME}")


# ---- config fragments ---------------------------------------------------------------

_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


def parse_fragment(path: Path) -> dict[str, str]:
    """``CONFIG_X -> value`` for one fragment, ``"n"`` for ``# CONFIG_X is not set``.

    Any other line must be blank or a comment, so a typo cannot silently turn
    into a comment that Kconfig ignores.
    """
    wanted: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        m = _SET.match(line) or _UNSET.match(line)
        if m:
            name = m.group(1)
            if name in wanted:
                problems.append(f"{path}:{number}: {name} is set twice")
            wanted[name] = m.group(2) if m.re is _SET else "n"
        elif line and not line.startswith("#"):
            problems.append(f"{path}:{number}: not a config line: {raw!r}")
        elif line.startswith("# CONFIG_") or line.startswith("#CONFIG_"):
            problems.append(f"{path}:{number}: use '# CONFIG_X is not set': {raw!r}")
    if problems:
        raise KernelBuildError("bad config fragment:\n" + "\n".join(problems))
    return wanted


def merged_fragments(fragments: Iterable[Path]) -> dict[str, str]:
    """The fragments in order, later ones overriding earlier ones."""
    wanted: dict[str, str] = {}
    for fragment in fragments:
        wanted.update(parse_fragment(fragment))
    return wanted


def read_config(path: Path) -> dict[str, str]:
    """The symbols a ``.config`` sets (those it leaves unset are absent)."""
    have: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _SET.match(line)
        if m:
            have[m.group(1)] = m.group(2)
    return have


def missing_options(wanted: Mapping[str, str], config: Mapping[str, str]) -> list[str]:
    """What of ``wanted`` the final ``config`` lost, one readable line per symbol."""
    missing = []
    for name, value in wanted.items():
        got = config.get(name)
        if value == "n":
            if got is not None and got != "n":
                missing.append(f"{name}: wanted not set, got {got}")
        elif got != value:
            missing.append(f"{name}: wanted {value}, got {got if got is not None else 'not set'}")
    return missing


def _write_merged_config(config: Path, wanted: Mapping[str, str]) -> None:
    kept = []
    for line in config.read_text(encoding="utf-8").splitlines():
        m = _SET.match(line) or _UNSET.match(line)
        if m is None or m.group(1) not in wanted:
            kept.append(line)
    for name, value in wanted.items():
        kept.append(f"# {name} is not set" if value == "n" else f"{name}={value}")
    write_atomic(config, ("\n".join(kept) + "\n").encode())


# ---- cache keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    tarball: Path
    identity: str

    @property
    def short(self) -> str:
        return digest([self.identity])[:12]


def _source(tarball: Path) -> _Source:
    try:
        st = tarball.stat()
    except OSError as e:
        raise KernelBuildError(
            f"kernel source tarball {tarball} is missing (install linux-source-6.12): {e}"
        ) from e
    # Size and mtime change with every Debian upload; reading 150 MB to hash
    # it would cost more than a cache hit may take.
    return _Source(tarball, f"{tarball.name}:{st.st_size}:{st.st_mtime_ns}")


def _gcc_version() -> str:
    try:
        return toolchain_identity("gcc")
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"cannot run 'gcc --version': {e}") from e


def _config_id(fragments: Sequence[Path]) -> str:
    return digest([ARCH, *(f.read_bytes() for f in fragments)])[:12]


def _variant_key(v: Variant, source: _Source, gcc: str) -> str:
    parts: list[str | bytes] = [_RECIPE, ARCH, source.identity, gcc, v.name]
    for patch in v.patches:
        parts += [patch.name, patch.read_bytes()]
    for fragment in v.fragments:
        parts += [fragment.name, fragment.read_bytes()]
    return digest(parts)[:24]


# ---- cache layout --------------------------------------------------------------------


def _kernel_cache() -> Path:
    path = cache_dir() / "kernel"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _image_dir(key: str) -> Path:
    return _kernel_cache() / "images" / key


def _cached_image(key: str) -> Path | None:
    image = _image_dir(key) / "bzImage"
    return image if image.is_file() else None


def kernel_path(variant: str | Variant, *, tarball: Path = DEFAULT_TARBALL) -> Path | None:
    """The cached bzImage of a variant, or None if it has not been built.

    Never builds; raises :class:`KernelBuildError` only when the source tarball
    or gcc, both part of the cache key, are missing.
    """
    v = resolve_variant(variant)
    return _cached_image(_variant_key(v, _source(tarball), _gcc_version()))


# ---- small file helpers ----------------------------------------------------------------


def _copy_atomic(src: Path, dst: Path) -> None:
    write_atomic(dst, src.read_bytes(), src.stat().st_mode & 0o7777)


@contextlib.contextmanager
def _locked(path: Path, progress: ProgressFn | None) -> Iterator[None]:
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another kernel build to finish (lock %s)", path)
            _say(progress, "waiting for another kernel build")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _say(progress: ProgressFn | None, line: str) -> None:
    if progress is not None:
        progress(line)


# ---- the source tree -----------------------------------------------------------------


@dataclass(frozen=True)
class _SourceTree:
    """One extracted tarball plus what we need to put files back as shipped."""

    root: Path

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def pristine(self) -> Path:
        return self.root / "pristine"

    @property
    def managed_list(self) -> Path:
        """Paths some series touched; absent from ``pristine`` if the tarball lacks them."""
        return self.root / "managed"

    @property
    def complete(self) -> Path:
        return self.root / "extracted"


def _run_or_fail(argv: list[str], cwd: Path | None, failure: str) -> None:
    """Run a tool quietly; if it fails, raise with its exit status and output tail."""
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise KernelBuildError(
            f"{failure} ({argv[0]} exited {proc.returncode})",
            tail=(proc.stdout + proc.stderr).splitlines()[-_TAIL_LINES:],
        )


def _prepare_source(source: _Source, progress: ProgressFn | None) -> _SourceTree:
    cache = _kernel_cache()
    src = _SourceTree(cache / f"src-{source.short}")
    _drop_stale(cache, source.short)
    if src.complete.is_file():
        return src

    if src.root.exists():
        log.info("removing an incomplete extraction in %s", src.root)
        shutil.rmtree(src.root)
    _say(progress, f"extracting {source.tarball.name}")
    log.info("extracting %s into %s", source.tarball, src.root)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".extract-"))
    try:
        (tmp / "tree").mkdir()
        # The tarball is xz in many blocks: threads nearly halve the time.
        _run_or_fail(
            ["tar", "-I", "xz -T0", "-xf", str(source.tarball), "-C", str(tmp / "tree"),
             "--strip-components=1"],
            None,
            f"extracting {source.tarball} failed",
        )
        if not (tmp / "tree" / "Makefile").is_file():
            raise KernelBuildError(f"{source.tarball} does not hold a kernel tree (no Makefile)")
        (tmp / "pristine").mkdir()
        (tmp / "managed").write_text("")
        (tmp / "extracted").write_text(source.identity + "\n")
        os.rename(tmp, src.root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("extracted in %.1f s", time.monotonic() - started)
    return src


def _drop_stale(cache: Path, current: str) -> None:
    """Trees and object dirs of an older tarball are 2 GB each: drop them."""
    for pattern in ("src-*", "out-*"):
        for path in cache.glob(pattern):
            if path.name.split("-")[1] != current:
                log.info("removing %s: it belongs to another source tarball", path)
                shutil.rmtree(path, ignore_errors=True)
    for path in cache.glob(".extract-*"):
        shutil.rmtree(path, ignore_errors=True)


def _read_managed(src: _SourceTree) -> list[str]:
    return [p for p in src.managed_list.read_text(encoding="utf-8").splitlines() if p]


def _manage(src: _SourceTree, paths: Iterable[str]) -> list[str]:
    """Record the shipped content of ``paths`` before we ever change them."""
    managed = _read_managed(src)
    for path in paths:
        if path in managed:
            continue
        shipped = src.tree / path
        # Only files never written by us are in the tree as shipped; the copy
        # is made before the path is listed, so a crash in between is harmless.
        if shipped.is_file():
            _copy_atomic(shipped, src.pristine / path)
        managed.append(path)
        write_atomic(src.managed_list, ("\n".join(managed) + "\n").encode())
    return managed


def _apply_series(
    src: _SourceTree, patches: Sequence[Path], label: str, progress: ProgressFn | None
) -> list[str]:
    """Make the tree hold exactly the shipped sources plus ``patches``.

    Returns the paths whose content changed.
    """
    with tempfile.TemporaryDirectory(dir=src.root, prefix=".series-") as scratch:
        diffs = split_patches(tuple(patches), Path(scratch) / "mail")
        touched: list[str] = []
        for d in diffs:
            touched += [p for p in patch_paths(d.diff) if p not in touched]
        managed = _manage(src, touched)
        want_root = Path(scratch) / "want"
        want_root.mkdir()
        for path in touched:
            if (src.pristine / path).is_file():
                (want_root / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src.pristine / path, want_root / path)
        for d in diffs:
            _apply_one(want_root, d, label)

        changed = []
        for path in managed:
            want = (want_root if path in touched else src.pristine) / path
            have = src.tree / path
            if want.is_file():
                if have.is_file() and have.read_bytes() == want.read_bytes():
                    continue
                _copy_atomic(want, have)
            elif have.exists():
                have.unlink()
            else:
                continue
            changed.append(path)
    if changed:
        log.info("series %s: rewrote %s", label, ", ".join(changed))
        _say(progress, f"series {label}: {len(changed)} file(s) changed")
    return changed


_PATCHING = re.compile(r"^(?:patching|checking) file '?([^']+?)'?$")
_HUNK_FAILED = re.compile(r"^Hunk #(\d+) FAILED at (\d+)")


def _apply_one(root: Path, patch: Patch, label: str, base: str = "the shipped sources") -> None:
    """Apply one diff as git am would: no fuzz (offsets are fine), or name the hunk."""
    proc = subprocess.run(
        ["patch", "-p1", "-F0", "-f", "--no-backup-if-mismatch", "-r", "-", "-i",
         str(patch.diff)],
        cwd=root, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode == 0:
        return
    where: list[str] = []
    current = "?"
    for line in (proc.stdout + proc.stderr).splitlines():
        if m := _PATCHING.match(line):
            current = m.group(1)
        elif m := _HUNK_FAILED.match(line):
            where.append(f"{current}: hunk #{m.group(1)} (at line {m.group(2)})")
        elif "can't find file to patch" in line or "No file to patch" in line:
            where.append(f"{current}: the file is not in the tree")
    subject = f" ({patch.subject})" if patch.subject and patch.subject != patch.origin else ""
    raise KernelBuildError(
        f"series {label}: {patch.origin}{subject} does not apply to {base}"
        + (":\n  " + "\n  ".join(where) if where else ""),
        tail=(proc.stdout + proc.stderr).splitlines()[-_TAIL_LINES:])


# ---- configure and make ----------------------------------------------------------------


def _make_env(host: str) -> dict[str, str]:
    env = dict(os.environ)
    # Make's jobserver from a calling make would cap our -j, and localized
    # messages would defeat the progress parser.
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    env["LC_ALL"] = "C"
    # The guest reads these back from /proc/version to tell variants apart;
    # they only feed init/version.o, so switching costs one file.
    env["KBUILD_BUILD_USER"] = "cxlrig"
    env["KBUILD_BUILD_HOST"] = host
    return env


_KBUILD_LINE = re.compile(r"^\s{2}([A-Z][A-Z0-9_]*(?: \[[A-Z]\])?)\s+(\S+)\s*$")


@dataclass
class _Make:
    """make in one source tree and O= directory, logged to one file.

    Not frozen: it remembers when it last reported progress.
    """

    tree: Path
    out: Path
    env: Mapping[str, str]
    logf: IO[str]
    log_path: Path
    progress: ProgressFn | None
    _last_report: float = field(default=0.0, init=False)

    def __call__(self, what: str, *targets: str, jobs: int | None = None) -> None:
        cmd = ["make", "-C", str(self.tree), f"O={self.out}", f"ARCH={ARCH}"]
        if jobs is not None:
            cmd.append(f"-j{jobs}")
        cmd += targets
        self.logf.write("$ " + " ".join(cmd) + "\n")
        self.logf.flush()
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        # Own session: on an interrupt the whole make process group is
        # stopped, not just make, which would leave its compilers running.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(self.env),
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                self.logf.write(line)
                tail.append(line.rstrip("\n"))
                self._report(tail[-1])
            rc = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
        finally:
            proc.stdout.close()
            self.logf.flush()
        if rc != 0:
            raise KernelBuildError(
                f"{what} failed: '{' '.join(cmd)}' exited {rc}", self.log_path, list(tail)
            )

    def _report(self, line: str) -> None:
        now = time.monotonic()
        if self.progress is None or now - self._last_report < _PROGRESS_INTERVAL_S:
            return
        m = _KBUILD_LINE.match(line)
        if m:
            # objtool's objects are named by their absolute path in O=.
            self.progress(f"{m.group(1)} {m.group(2).removeprefix(f'{self.out}/')}")
            self._last_report = now


def _stop_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _configure(make: _Make, fragments: Sequence[Path]) -> None:
    """tinyconfig + fragments + olddefconfig, redone only when the fragments change."""
    stamp = make.out / ".cxlrig-config"
    config = make.out / ".config"
    want_stamp = _config_id(fragments)
    if config.is_file() and stamp.is_file() and stamp.read_text().strip() == want_stamp:
        return

    _say(make.progress, "configuring (tinyconfig + fragments)")
    make.out.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    wanted = merged_fragments(fragments)
    make("make tinyconfig", "tinyconfig")
    _write_merged_config(config, wanted)
    make("make olddefconfig", "olddefconfig")
    missing = missing_options(wanted, read_config(config))
    if missing:
        make.logf.write("options lost by olddefconfig:\n" + "\n".join(missing) + "\n")
        raise KernelBuildError(
            "the config fragments ask for options that olddefconfig dropped (a dependency is "
            "missing from the fragment):\n  " + "\n  ".join(missing),
            make.log_path,
        )
    stamp.write_text(want_stamp + "\n")


def _default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _build_into(
    image_dir: Path,
    tree: Path,
    out: Path,
    fragments: Sequence[Path],
    host: str,
    jobs: int,
    what: str,
    progress: ProgressFn | None,
) -> Path:
    """Configure and make in ``out``; copy the results into ``image_dir``."""
    image_dir.mkdir(parents=True, exist_ok=True)
    log_path = image_dir / "build.log"
    (image_dir / "bzImage").unlink(missing_ok=True)
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as logf:
        make = _Make(tree, out, _make_env(host), logf, log_path, progress)
        _configure(make, fragments)
        _say(progress, f"building {what} with make -j{jobs}")
        make(f"building {what}", "bzImage", jobs=jobs)
        image = out / IMAGE_IN_O
        if not image.is_file():
            raise KernelBuildError(
                f"building {what}: make succeeded but {image} is missing", log_path
            )
        for name, src in (("System.map", out / "System.map"), ("config", out / ".config")):
            _copy_atomic(src, image_dir / name)
        # bzImage last: its presence is what marks the entry complete.
        _copy_atomic(image, image_dir / "bzImage")
        elapsed = time.monotonic() - started
        logf.write(f"built in {elapsed:.1f} s\n")
    log.info("built %s in %.1f s: %s", what, elapsed, image_dir / "bzImage")
    _say(progress, f"built {what} in {elapsed:.0f} s")
    return image_dir / "bzImage"


# ---- public entry point ------------------------------------------------------------------


def build_kernel(
    variant: str | Variant,
    *,
    tree: Path | None = None,
    jobs: int | None = None,
    progress: ProgressFn | None = None,
    force: bool = False,
    tarball: Path = DEFAULT_TARBALL,
) -> Path:
    """Return the path of a bzImage for ``variant``, building it if not cached.

    With ``tree``, build that kernel source tree with the variant's config
    fragments: as it is for a built-in variant, with the series applied to a
    copy of it (in the cache; the tree itself is never written) for a user's
    series. ``variant`` is a built-in name or a
    :class:`Variant` (a user's series, :func:`load_series`). ``progress``
    receives short lines, at most about one a second. ``force`` rebuilds even
    on a cache hit.

    ``System.map``, ``config`` and ``build.log`` sit next to the image. Raises
    :class:`KernelBuildError` (log path and tail in the message) when a step
    fails (a patch that does not apply: the patch and the hunk), and
    :class:`UnknownVariantError` for a name not in :data:`VARIANTS`.
    """
    v = resolve_variant(variant)
    require_data("guest", "kernel")
    n_jobs = jobs if jobs is not None else _default_jobs()
    if n_jobs < 1:
        raise KernelBuildError(f"jobs must be at least 1, got {n_jobs}")
    if tree is not None:
        return _build_tree(v, tree, n_jobs, progress, force)

    source = _source(tarball)
    key = _variant_key(v, source, _gcc_version())
    if not force and (hit := _cached_image(key)) is not None:
        log.debug("kernel %s: cache hit %s", variant, hit)
        return hit

    cache = _kernel_cache()
    with _locked(cache / "lock", progress):
        # Someone may have built it while we waited for the lock.
        if not force and (hit := _cached_image(key)) is not None:
            return hit
        src = _prepare_source(source, progress)
        _apply_series(src, v.patches, v.name, progress)
        out = cache / f"out-{source.short}-{_config_id(v.fragments)}"
        return _build_into(
            _image_dir(key),
            src.tree,
            out,
            v.fragments,
            v.name,
            n_jobs,
            f"kernel {v.name}",
            progress,
        )


def _tree_state(tree: Path) -> str:
    """What identifies the sources of a user's tree: HEAD plus any local diff, else mtimes."""
    git = shutil.which("git")
    if git is not None and (tree / ".git").exists():

        def run(*args: str) -> bytes:
            return subprocess.run(
                [git, "-C", str(tree), *args],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                check=True,
            ).stdout

        try:
            head = run("rev-parse", "HEAD").strip()
            diff = run("diff", "--binary", "HEAD")
            untracked = run("ls-files", "--others", "--exclude-standard", "-z")
        except (OSError, subprocess.CalledProcessError) as e:
            raise KernelBuildError(f"cannot read the git state of {tree}: {e}") from e
        return "git:" + digest([head, diff, untracked])
    newest = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            with contextlib.suppress(OSError):
                newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime_ns)
    return f"mtime:{newest}"


def _check_tree(tree: Path) -> Path:
    tree = tree.expanduser().resolve()
    if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
        raise KernelBuildError(f"{tree} is not a kernel source tree (no Makefile and Kconfig)")
    return tree


def series_on_tree(v: Variant) -> bool:
    """With a user's tree: does ``v`` bring patches for it? A user's series does;
    a built-in variant gives only its config fragments (the tree is built as it is)."""
    return not v.builtin and bool(v.patches)


def _tree_key(v: Variant, tree: Path) -> str:
    """The image key of a user's tree (resolved) built with ``v``'s fragments (and
    ``v``'s patches, for a user's series)."""
    parts: list[str | bytes] = [_RECIPE, ARCH, str(tree), _tree_state(tree), _gcc_version()]
    parts += [f.read_bytes() for f in v.fragments]
    if series_on_tree(v):
        for patch in v.patches:
            parts += ["patch", patch.name, patch.read_bytes()]
    return "tree-" + digest(parts)[:24]


#: Build outputs of an in-tree build, left out of the copy of a tree without git.
_BUILT = (".o", ".ko", ".a", ".cmd", ".mod", ".order", ".symvers", ".d", ".tmp")


def _tree_files(tree: Path) -> list[str]:
    """The source files of a user's tree, relative: what git tracks or would track
    (ignored files left out), else every file outside dot-directories that is not
    a build output."""
    git = shutil.which("git")
    if git is not None and (tree / ".git").exists():
        proc = subprocess.run(
            [git, "-C", str(tree), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            capture_output=True, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise KernelBuildError(f"cannot list the files of {tree}: "
                                   f"{proc.stderr.decode(errors='replace').strip()}")
        names = [n for n in proc.stdout.decode(errors="surrogateescape").split("\0") if n]
        return sorted({n for n in names if os.path.lexists(tree / n)})
    out = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, tree)
        for name in filenames:
            if not name.startswith(".") and not name.endswith(_BUILT):
                out.append(name if rel == "." else os.path.join(rel, name))
    return sorted(out)


def _sync_tree(tree: Path, copy: Path, patched: Path, progress: ProgressFn | None) -> None:
    """Make ``copy`` hold exactly the source files of ``tree`` (only what changed is
    copied). Files a series patched last time are restored and then touched, so
    that make rebuilds what was built from their patched content."""
    _say(progress, f"copying {tree}")
    files = _tree_files(tree)
    want = set(files)
    copy.mkdir(parents=True, exist_ok=True)
    for dirpath, _, filenames in os.walk(copy):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), copy)
            if rel not in want:
                os.unlink(os.path.join(dirpath, name))
    copied = 0
    for rel in files:
        src, dst = tree / rel, copy / rel
        st = src.lstat()
        try:
            have = dst.lstat()
            same = (have.st_size == st.st_size and have.st_mtime_ns == st.st_mtime_ns
                    and os.path.islink(dst) == os.path.islink(src))
        except FileNotFoundError:
            same = False
        if same:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(dst):
            dst.unlink()
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
        copied += 1
    if patched.is_file():
        for rel in patched.read_text(encoding="utf-8").splitlines():
            if rel and (copy / rel).is_file():
                os.utime(copy / rel)
    log.info("copy of %s: %d of %d files copied", tree, copied, len(files))


def tree_to_build(v: Variant, tree: Path, progress: ProgressFn | None) -> Path:
    """The directory to build for ``tree``: the tree itself, or, for a user's series,
    a copy of it in the cache with the series applied (the user's tree is never
    written). Call under the build lock."""
    if not series_on_tree(v):
        return tree
    root = _kernel_cache() / "trees" / f"copy-{digest([str(tree)])[:16]}"
    copy, patched = root / "tree", root / "patched"
    _sync_tree(tree, copy, patched, progress)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".series-") as scratch:
        diffs = split_patches(tuple(v.patches), Path(scratch) / "mail")
        touched = sorted({p for d in diffs for p in patch_paths(d.diff)})
        # Listed before any is written: a crash halfway is undone by the next sync.
        write_atomic(patched, ("\n".join(touched) + "\n").encode())
        for d in diffs:
            _apply_one(copy, d, v.name, base=str(tree))
    _say(progress, f"series {v.name}: applied to a copy of {tree}")
    return copy


def _build_tree(
    v: Variant, tree: Path, jobs: int, progress: ProgressFn | None, force: bool
) -> Path:
    tree = _check_tree(tree)
    key = _tree_key(v, tree)
    if not force and (hit := _cached_image(key)) is not None:
        return hit
    cache = _kernel_cache()
    with _locked(cache / "lock", progress):
        if not force and (hit := _cached_image(key)) is not None:
            return hit
        source = tree_to_build(v, tree, progress)
        # One object dir per tree and config, whatever the commit: moving to
        # another commit is then an incremental build.
        out = cache / "trees" / digest([str(source), _config_id(v.fragments)])[:16]
        return _build_into(
            _image_dir(key),
            source,
            out,
            v.fragments,
            f"tree-{v.name}",
            jobs,
            f"{tree} ({v.name} config)",
            progress,
        )


# ---- checkpatch ----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpatchResult:
    """What ``scripts/checkpatch.pl --strict`` said of one patch file."""

    patch: Path
    errors: int
    warnings: int
    checks: int
    output: str


_CHECKPATCH_TOTAL = re.compile(r"^total: (\d+) errors?, (\d+) warnings?, (?:(\d+) checks?, )?",
                               re.MULTILINE)


def checkpatch(
    variant: str | Variant,
    *,
    tree: Path | None = None,
    progress: ProgressFn | None = None,
    tarball: Path = DEFAULT_TARBALL,
) -> list[CheckpatchResult]:
    """Run the base tree's ``scripts/checkpatch.pl --strict`` on each patch of ``variant``.

    The base is ``tree`` if given, else the extracted source tarball (extracted
    first if this machine never built a kernel). Raises :class:`KernelBuildError`
    when checkpatch cannot run or prints no verdict.
    """
    v = resolve_variant(variant)
    if tree is not None:
        root = _check_tree(tree)
    else:
        source = _source(tarball)
        src = _SourceTree(_kernel_cache() / f"src-{source.short}")
        if not src.complete.is_file():  # extraction is atomic: no lock needed once done
            with _locked(_kernel_cache() / "lock", progress):
                src = _prepare_source(source, progress)
        root = src.tree
    script = root / "scripts" / "checkpatch.pl"
    perl = shutil.which("perl")
    if perl is None or not script.is_file():
        raise KernelBuildError(f"cannot run checkpatch: {'perl' if perl is None else script} "
                               "is missing")
    results: list[CheckpatchResult] = []
    for patch in v.patches:
        proc = subprocess.run(
            [perl, str(script), "--strict", "--no-color", "--no-summary-file",
             f"--root={root}", str(patch)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
            timeout=TIMEOUTS.checkpatch)
        m = _CHECKPATCH_TOTAL.search(proc.stdout)
        if m is None:
            raise KernelBuildError(f"checkpatch gave no verdict on {patch} (exit "
                                   f"{proc.returncode})",
                                   tail=(proc.stdout + proc.stderr).splitlines()[-_TAIL_LINES:])
        results.append(CheckpatchResult(patch, int(m.group(1)), int(m.group(2)),
                                        int(m.group(3) or 0), proc.stdout))
    return results
