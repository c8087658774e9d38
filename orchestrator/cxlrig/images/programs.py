"""Build the static guest programs (``mpp``, ``hotcold``) into the cache.

The build directory is named by a SHA-256 over everything that decides the
binaries: the C sources and headers, the Makefile, the kernel patch that
defines the ``move_phys_pages`` syscall number, the compiler's identity and
the C library's version. A hit costs one hash and one ``gcc --version``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cxlrig import paths
from cxlrig.images.cache import BuildError, digest, publish, run_make, toolchain_identity

log = logging.getLogger(__name__)

#: Where the C sources and their Makefile live.
SOURCE_DIR = paths.DATA_ROOT / "guest" / "programs"
#: What ``make`` leaves in its output directory.
PROGRAMS = ("mpp", "hotcold", "mpp32")
#: A cold build takes a few seconds; this only catches a wedged compiler.
BUILD_TIMEOUT_S = 300.0
#: The compiler used, passed to make so the hash and the build agree.
COMPILER = "gcc"

# Variables that would change the build behind the hash's back if inherited
# from the caller's environment (make imports every environment variable).
_SCRUBBED_ENV = (
    "NR_MOVE_PHYS_PAGES",
    "EXTRA_CFLAGS",
    "CFLAGS",
    "LDFLAGS",
    "OUT",
    "CC",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "GNUMAKEFLAGS",
)


class ProgramsBuildError(BuildError):
    """The guest programs could not be built (command and compiler output kept)."""


def patches_dir(source_dir: Path) -> Path:
    """The kernel patch series, found where the Makefile looks for it."""
    return source_dir.parent / "kernel" / "patches"


def syscall_patches(source_dir: Path) -> list[Path]:
    """Patches that add ``move_phys_pages`` to the x86_64 syscall table.

    The Makefile extracts the number itself; this only decides which patch
    files are part of the cache key, so a coarse test is enough.
    """
    root = patches_dir(source_dir)
    candidates = sorted({*root.glob("*.patch"), *root.glob("*/*.patch")})
    found = []
    for patch in candidates:
        text = patch.read_text(encoding="utf-8", errors="replace")
        if "syscall_64.tbl" in text and "move_phys_pages" in text:
            found.append(patch)
    return found


def _toolchain_identity() -> str:
    """Compiler version and target plus the C library's version."""
    try:
        compiler = toolchain_identity(COMPILER)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProgramsBuildError(f"cannot run the compiler {COMPILER!r}: {exc}") from exc
    # The binaries are static: the C library is linked into them.
    libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else ""
    return f"{compiler}\n{libc}"


def _source_files(source_dir: Path) -> list[Path]:
    files = [source_dir / "Makefile"]
    files += sorted(p for p in source_dir.iterdir() if p.suffix in (".c", ".h") and p.is_file())
    return files


def cache_key(source_dir: Path = SOURCE_DIR) -> str:
    """The SHA-256 naming the build of the programs in ``source_dir``."""
    parts: list[str | bytes] = []
    for path in _source_files(source_dir):
        parts += [f"src/{path.name}", path.read_bytes()]
    for patch in syscall_patches(source_dir):
        parts += [f"patch/{patch.parent.name}/{patch.name}", patch.read_bytes()]
    return digest([*parts, "toolchain", _toolchain_identity()])


def _is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in (*PROGRAMS, "manifest.json"))


def _run_make(source_dir: Path, out: Path) -> str:
    return run_make(["make", "-C", str(source_dir), f"OUT={out}", f"CC={COMPILER}"],
                    what="the guest programs", error=ProgramsBuildError,
                    scrubbed_env=_SCRUBBED_ENV, timeout=BUILD_TIMEOUT_S)


def build_guest_programs(force: bool = False, *, source_dir: Path | None = None) -> Path:
    """Build ``mpp`` and ``hotcold`` (or reuse the cached build) and return their directory.

    ``force`` rebuilds even when the cache holds a build for these inputs.
    ``source_dir`` defaults to the repository's ``guest/programs``; the kernel
    patches are looked for beside it, as the Makefile does.
    """
    src = (source_dir or paths.require_data("guest", "programs")).resolve()
    key = cache_key(src)
    root = paths.cache_dir() / "programs"
    final = root / key
    if not force and _is_complete(final):
        log.debug("guest programs cached in %s", final)
        return final

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        output = _run_make(src, staging)
        missing = [name for name in PROGRAMS if not (staging / name).is_file()]
        if missing:
            raise ProgramsBuildError(
                f"make succeeded but did not produce {', '.join(missing)}\n{output}",
                output=output,
            )
        shutil.rmtree(staging / "obj", ignore_errors=True)
        (staging / "build.log").write_text(output, encoding="utf-8")
        manifest = {
            "key": key,
            "source_dir": str(src),
            "patches": [str(p) for p in syscall_patches(src)],
            "toolchain": _toolchain_identity(),
            "programs": list(PROGRAMS),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        publish(staging, final, _is_complete)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("guest programs built in %s", final)
    return final
