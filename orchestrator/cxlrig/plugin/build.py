"""Build the cxlrig-mem TCG plugin into the content-hash cache.

The build directory is named by a SHA-256 over everything that decides the
shared object: the plugin's C source, any header beside it, its Makefile,
QEMU's ``qemu-plugin.h``, glib's compiler flags and the compiler's identity.
A hit costs one hash, one ``gcc --version`` and one ``pkg-config``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from cxlrig import paths
from cxlrig.images.cache import BuildError, digest, publish, run_make, toolchain_identity

log = logging.getLogger(__name__)

#: Where the plugin's C source and Makefile live.
SOURCE_DIR = paths.DATA_ROOT / "qemu-plugin"
LIBRARY = "libcxlrig-mem.so"
#: A cold build takes about a second; this only catches a wedged compiler.
BUILD_TIMEOUT_S = 120.0
COMPILER = "gcc"

# make imports every environment variable: these would change the build
# behind the hash's back.
_SCRUBBED_ENV = ("CFLAGS", "CPPFLAGS", "LDFLAGS", "EXTRA_CFLAGS", "OUT", "CC",
                 "QEMU_PLUGIN_INCLUDE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "GNUMAKEFLAGS")


class PluginBuildError(BuildError):
    """The plugin could not be built; the message carries the compiler's output."""


def plugin_header_dir() -> Path:
    """The directory holding QEMU's ``qemu-plugin.h`` (unpacked by ``make setup``)."""
    return paths.cache_dir() / "qemu-src" / "include" / "qemu"


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True,
                              timeout=BUILD_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PluginBuildError(f"cannot run {' '.join(command)}: {exc}", command=command) from exc


def _toolchain_identity() -> str:
    command = [COMPILER, "--version"]
    try:
        return toolchain_identity(COMPILER, ("pkg-config", "--cflags", "glib-2.0"))
    except (OSError, subprocess.SubprocessError) as exc:
        raise PluginBuildError(f"cannot run the compiler or pkg-config: {exc}",
                               command=command) from exc


def _inputs(source_dir: Path, header_dir: Path) -> list[tuple[str, Path]]:
    header = header_dir / "qemu-plugin.h"
    if not header.is_file():
        raise PluginBuildError(f"{header} not found: run 'make setup' (it unpacks QEMU's "
                               "plugin header into the cache)")
    files = [("src/Makefile", source_dir / "Makefile")]
    files += [(f"src/{p.name}", p) for p in sorted(source_dir.iterdir())
              if p.suffix in (".c", ".h") and p.is_file()]
    files.append(("qemu-plugin.h", header))
    return files


def cache_key(source_dir: Path = SOURCE_DIR, header_dir: Path | None = None) -> str:
    """The SHA-256 naming the build of the plugin in ``source_dir``."""
    parts: list[str | bytes] = []
    for label, path in _inputs(source_dir, header_dir or plugin_header_dir()):
        parts += [label, path.read_bytes()]
    return digest([*parts, "toolchain", _toolchain_identity()])


def _run_make(source_dir: Path, header_dir: Path, out: Path) -> str:
    return run_make(["make", "-C", str(source_dir), f"OUT={out}", f"CC={COMPILER}",
                     f"QEMU_PLUGIN_INCLUDE={header_dir}"],
                    what="the plugin", error=PluginBuildError, scrubbed_env=_SCRUBBED_ENV,
                    timeout=BUILD_TIMEOUT_S)


def build_plugin(force: bool = False, *, source_dir: Path | None = None,
                 header_dir: Path | None = None) -> Path:
    """Build ``libcxlrig-mem.so`` (or reuse the cached build) and return its path.

    ``force`` rebuilds even when the cache holds a build for these inputs.
    """
    src = (source_dir or paths.require_data("qemu-plugin")).resolve()
    hdr = (header_dir or plugin_header_dir()).resolve()
    key = cache_key(src, hdr)
    root = paths.cache_dir() / "plugin"
    final = root / key
    if not force and (final / LIBRARY).is_file():
        log.debug("plugin cached in %s", final)
        return final / LIBRARY

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        output = _run_make(src, hdr, staging)
        if not (staging / LIBRARY).is_file():
            raise PluginBuildError(f"make succeeded but did not produce {LIBRARY}\n{output}",
                                   output=output)
        (staging / "build.log").write_text(output, encoding="utf-8")
        manifest = {"key": key, "source_dir": str(src), "header_dir": str(hdr),
                    "toolchain": _toolchain_identity()}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        publish(staging, final, lambda d: (d / LIBRARY).is_file())
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("plugin built in %s", final)
    return final / LIBRARY
