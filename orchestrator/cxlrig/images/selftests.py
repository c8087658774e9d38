"""The kernel's own selftests, built from the source tree of the kernel under test.

The tests named in ``guest/kernel/selftests`` (``DIR/NAME``, e.g.
``mm/migration``) are built by the tree's own selftest Makefile, statically
(``LDFLAGS=-static``: the initramfs has no C library), against the uapi
headers of that very tree (``make headers``), so a series that adds a system
call and its selftest gets both. They land next to the kernel's bzImage, in
``selftests/DIR/NAME``, with ``selftests.json`` saying what could not be had:
a test the tree does not have is *missing* (v1 has no move_phys_pages
selftest: its cases are a skip), one that does not compile is *broken* (a
failure). A scenario's ``kselftest:`` step runs ``/opt/kselftest/DIR/NAME``.

Built under the kernel build's lock (the source tree is shared by every
variant) and redone only when the list, the toolchain or the libraries
change; the kernel's own cache key is left alone, so adding a test to the
list costs seconds, not a kernel build.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from cxlrig.errors import CxlrigError
from cxlrig.files import write_atomic
from cxlrig.images import kernel as k
from cxlrig.images.cache import digest, toolchain_identity
from cxlrig.images.variants import KERNEL_DIR, Variant, resolve_variant

log = logging.getLogger(__name__)

#: The list of selftests to build, one ``DIR/NAME`` per line.
LIST_FILE = KERNEL_DIR / "selftests"
#: Where the guest finds them (``/opt/kselftest/mm/migration``).
GUEST_DIR = "/opt/kselftest"
#: Next to the bzImage.
DIR_NAME = "selftests"
MANIFEST = "selftests.json"
#: Bump when the way the tests are built changes without any input changing.
_RECIPE = "1"
#: The C libraries a selftest links statically besides glibc.
_LIBRARIES = ("libc6-dev", "libnuma-dev")
_NAME = re.compile(r"^[a-z0-9_-]+/[A-Za-z0-9_.-]+$")
_TAIL = 20
_MAKE_TIMEOUT_S = 600.0


class SelftestError(CxlrigError):
    """The selftests could not be built at all (headers, toolchain, the list)."""


def selftest_names(path: Path = LIST_FILE) -> tuple[str, ...]:
    """The tests of the list file, in its order; a bad line names file and line."""
    names: list[str] = []
    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _NAME.match(line):
            raise SelftestError(f"{path}:{i}: '{line}' is not DIR/NAME "
                                "(a program under tools/testing/selftests)")
        if line not in names:
            names.append(line)
    return tuple(names)


@dataclass(frozen=True)
class Absent:
    """A listed test this kernel's selftests lack, and why."""

    kind: Literal["missing", "broken"]
    why: str


@dataclass(frozen=True)
class Selftests:
    """What was built for one kernel."""

    root: Path
    built: tuple[str, ...]
    absent: dict[str, Absent]

    def binary(self, name: str) -> Path | None:
        return self.root / name if name in self.built else None


def load_selftests(kernel: Path) -> Selftests | None:
    """The selftests built next to ``kernel``, or None (a bzImage from elsewhere)."""
    root = kernel.parent / DIR_NAME
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        built = tuple(str(n) for n in manifest["built"])
        absent = {str(n): Absent(a["kind"], str(a["why"]))
                  for n, a in manifest["absent"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Selftests(root, built, absent)


def _identity(names: tuple[str, ...]) -> str:
    try:
        tools = toolchain_identity("gcc", ("dpkg-query", "-W", "-f=${Package} ${Version}\n",
                                           *_LIBRARIES))
    except (OSError, subprocess.SubprocessError) as exc:
        raise SelftestError(f"the selftests need gcc and {', '.join(_LIBRARIES)} "
                            f"('make setup' installs them): {exc}") from exc
    return digest([_RECIPE, *names, tools])[:24]


def build_selftests(variant: str | Variant, *, tree: Path | None = None,
                    tarball: Path = k.DEFAULT_TARBALL,
                    progress: k.ProgressFn | None = None) -> Selftests:
    """Build the listed selftests next to ``variant``'s kernel (built already).

    With ``tree``, from that user tree (as :func:`build_kernel` with ``tree``).
    A cache hit costs a few stats; a build about 20 s (mostly ``make headers``).
    """
    v = resolve_variant(variant)
    names = selftest_names()
    want = _identity(names)
    if tree is not None:
        tree = k._check_tree(tree)
        key = k._tree_key(v, tree)
    else:
        source = k._source(tarball)
        key = k._variant_key(v, source, k._gcc_version())
    image_dir = k._image_dir(key)
    if k._cached_image(key) is None:
        raise SelftestError(f"kernel {v.name} is not built yet: build it before its selftests")
    if (hit := _current(image_dir, want)) is not None:
        return hit
    cache = k._kernel_cache()
    with k._locked(cache / "lock", progress):
        if (hit := _current(image_dir, want)) is not None:
            return hit
        if tree is None:
            src = k._prepare_source(source, progress)
            k._apply_series(src, v.patches, v.name, progress)
            root, headers = src.tree, cache / f"out-{source.short}-headers"
        else:
            root = k.tree_to_build(v, tree, progress)
            headers = cache / "trees" / (digest([str(root)])[:16] + "-headers")
        return _build(root, headers, image_dir, names, want, v.name, progress)


def _current(image_dir: Path, want: str) -> Selftests | None:
    stamp = image_dir / DIR_NAME / ".identity"
    try:
        if stamp.read_text().strip() != want:
            return None
    except OSError:
        return None
    return load_selftests(image_dir / "bzImage")


def _build(tree: Path, headers: Path, image_dir: Path, names: tuple[str, ...], identity: str,
           label: str, progress: k.ProgressFn | None) -> Selftests:
    started = time.monotonic()
    log_path = image_dir / "selftests.log"
    staging = Path(tempfile.mkdtemp(dir=image_dir, prefix=".selftests-"))
    staging.chmod(0o755)
    try:
        with open(log_path, "w", encoding="utf-8") as logf:
            k._say(progress, f"selftests of {label}: uapi headers")
            headers.mkdir(parents=True, exist_ok=True)
            make = k._Make(tree, headers, k._make_env(label), logf, log_path, progress)
            make(f"the uapi headers of {label}", "headers")
            built: list[str] = []
            absent: dict[str, Absent] = {}
            for name in names:
                directory, program = name.split("/")
                if not (tree / "tools/testing/selftests" / directory / f"{program}.c").is_file():
                    absent[name] = Absent("missing", f"not in this kernel's source tree "
                                          f"(tools/testing/selftests/{name}.c)")
                    continue
                k._say(progress, f"selftests of {label}: {name}")
                failure = _make_one(tree, headers, staging, directory, program, logf)
                if failure is None:
                    built.append(name)
                else:
                    absent[name] = Absent("broken", f"did not build ({log_path}): {failure}")
            write_manifest(staging, label, built, absent)
            (staging / ".identity").write_text(identity + "\n")
            logf.write(f"built in {time.monotonic() - started:.1f} s\n")
        final = image_dir / DIR_NAME
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("selftests of %s built in %.1f s: %s", label, time.monotonic() - started, final)
    found = load_selftests(image_dir / "bzImage")
    if found is None:
        raise SelftestError(f"{final / MANIFEST} was not written")
    return found


def _make_one(tree: Path, headers: Path, staging: Path, directory: str, program: str,
              logf: IO[str]) -> str | None:
    """Build one test with its directory's Makefile; None, or the last lines of why not."""
    scratch = Path(tempfile.mkdtemp(dir=staging, prefix=".make-"))
    cmd = ["make", "-C", str(tree / "tools/testing/selftests" / directory), f"OUTPUT={scratch}",
           f"KHDR_INCLUDES=-isystem {headers / 'usr/include'}", "LDFLAGS=-static",
           str(scratch / program)]
    logf.write("$ " + " ".join(cmd) + "\n")
    logf.flush()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace",
                              env=k._make_env("cxlrig"), timeout=_MAKE_TIMEOUT_S, check=False)
        logf.write(proc.stdout)
        if proc.returncode == 0 and (scratch / program).is_file():
            # Only the program: whatever else the Makefile left there is not ours to ship.
            (staging / directory).mkdir(parents=True, exist_ok=True)
            (scratch / program).rename(staging / directory / program)
            return None
    except subprocess.TimeoutExpired:
        return f"make took longer than {_MAKE_TIMEOUT_S:.0f} s"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tail: deque[str] = deque(proc.stdout.splitlines(), maxlen=_TAIL)
    return "\n".join(tail) or f"make exited {proc.returncode}"


def write_manifest(root: Path, label: str, built: list[str], absent: dict[str, Absent]) -> None:
    """What :func:`load_selftests` reads: the tests built into ``root`` and the rest."""
    manifest = {"kernel": label, "built": built,
                "absent": {n: {"kind": a.kind, "why": a.why} for n, a in absent.items()}}
    write_atomic(root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
