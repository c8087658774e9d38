"""Files of the user's in the guest: ``--add HOST[:GUEST]`` and scenarios' ``files:``.

The files are staged as they will lie in the guest, packed with ``cpio -H
newc`` and appended to the initramfs (Linux unpacks concatenated archives in
order, later entries winning), so nothing about the base image changes. A
dynamically linked ELF binary brings the shared objects ``ldd`` says it loads,
at the paths it loads them from, as the shipped tools do; static binaries and
scripts are copied as they are. A directory is copied whole. The combined
image is cached under ``<cache>/initramfs/`` by the hash of both parts.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cxlrig import paths
from cxlrig.errors import CxlrigError
from cxlrig.files import write_atomic
from cxlrig.images.cache import digest
from cxlrig.images.initramfs import InitramfsError, host_libraries, tree_hash

#: Guest RAM holds the initramfs twice while it unpacks: keep it well below
#: the smallest shipped topology's memory.
MAX_BYTES = 128 << 20
#: Where a file goes when the user names no guest path.
DEFAULT_DIR = PurePosixPath("/opt")
_RESERVED = ("/init", "/proc", "/sys", "/dev")


class AddError(CxlrigError):
    """A file to add that cannot be: names the argument and why."""


@dataclass(frozen=True)
class GuestFile:
    """A host file or directory and where it lies in the guest."""

    host: Path
    guest: PurePosixPath

    @classmethod
    def parse(cls, text: str, base: Path | None = None) -> GuestFile:
        """``HOST[:GUEST]``; a relative HOST is taken from ``base`` (default: cwd)."""
        host_s, sep, guest_s = text.partition(":")
        if not host_s:
            raise AddError(f"--add {text!r}: no host path (HOST[:GUEST])")
        host = Path(host_s).expanduser()
        if not host.is_absolute():
            host = (base or Path.cwd()) / host
        return cls.make(host, guest_s if sep else None, f"--add {text!r}")

    @classmethod
    def make(cls, host: Path, guest: str | None, what: str) -> GuestFile:
        """``host`` at ``guest`` (default /opt/NAME); errors start with ``what``."""
        if not host.exists():
            raise AddError(f"{what}: {host}: no such file or directory")
        if not (host.is_file() or host.is_dir()):
            raise AddError(f"{what}: {host}: not a file or directory")
        where = PurePosixPath(guest) if guest else DEFAULT_DIR / host.name
        if not where.is_absolute() or ".." in where.parts or where == PurePosixPath("/"):
            raise AddError(f"{what}: the guest path {str(where)!r} must be absolute, below /, "
                           "with no '..'")
        if any(str(where) == r or str(where).startswith(r + "/") for r in _RESERVED):
            raise AddError(f"{what}: {where} would replace what the guest needs to boot")
        return cls(host.resolve(), where)


def resolve_all(texts: Sequence[str], base: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """Each ``HOST[:GUEST]`` of a file's ``files:`` list made absolute
    (``HOST:GUEST``), and for each that cannot be, its index and why."""
    done: list[str] = []
    bad: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        try:
            gf = GuestFile.parse(text, base=base)
        except AddError as exc:
            bad.append((i, str(exc).removeprefix(f"--add {text!r}: ")))
            continue
        done.append(f"{gf.host}:{gf.guest}")
    return done, bad


def _is_dynamic_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return False
    res = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
    # ldd exits 1 with "not a dynamic executable" for a static (or foreign) ELF.
    return res.returncode == 0 and "statically linked" not in res.stdout


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    os.chmod(dest, stat.S_IMODE(src.stat().st_mode))


def stage(files: Sequence[GuestFile], root: Path) -> None:
    """Lay ``files`` (and the libraries of dynamic binaries) out under ``root``."""
    total = 0
    for f in files:
        dest = root / str(f.guest).lstrip("/")
        sources = [(f.host, dest)] if f.host.is_file() else [
            (p, dest / p.relative_to(f.host)) for p in sorted(f.host.rglob("*")) if p.is_file()]
        for src, to in sources:
            total += src.stat().st_size
            if total > MAX_BYTES:
                raise AddError(f"the files to add exceed {MAX_BYTES >> 20} MiB (at {src}); "
                               "the initramfs lives in guest memory")
            _place(src, to)
            if os.access(src, os.X_OK) and _is_dynamic_elf(src):
                try:
                    libs = host_libraries(src)
                except InitramfsError as exc:
                    raise AddError(f"{f.host}: {exc}") from None
                for lib in libs:
                    target = root / str(lib).lstrip("/")
                    if not target.exists():
                        _place(lib.resolve(), target)


def with_files(initrd: Path, files: Iterable[GuestFile]) -> Path:
    """``initrd`` with ``files`` appended: a cached image of its own, or ``initrd``
    itself when there is nothing to add."""
    wanted = list(dict.fromkeys(files))
    if not wanted:
        return initrd
    out_dir = paths.cache_dir() / "initramfs"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cxlrig-add-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        stage(wanted, root)
        key = digest([initrd.name, tree_hash(root)])[:20]
        image = out_dir / f"{initrd.name.split('.')[0]}+{key}.cpio.gz"
        if image.exists():
            return image
        names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=root, capture_output=True,
                               check=True).stdout
        res = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "+0:+0"], cwd=root,
                             input=names, capture_output=True, check=False)
        if res.returncode != 0:
            raise AddError(f"cpio failed: {res.stderr.decode(errors='replace').strip()}")
        # Concatenated gzip members are one gzip stream to the kernel's unpacker.
        write_atomic(image, initrd.read_bytes() + gzip.compress(res.stdout, compresslevel=6))
    return image
