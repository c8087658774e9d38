"""The guest's initramfs: busybox, our programs, cxl/daxctl/numactl, an init.

Everything is staged in a temporary directory, hashed (paths, modes and
contents), and packed with the real ``cpio -H newc`` into
``<cache>/initramfs/<hash>.cpio.gz``. A second build with the same inputs
only stages and hashes (well under a second) and returns the cached file.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from cxlrig import paths
from cxlrig.errors import CxlrigError
from cxlrig.images.cache import digest
from cxlrig.images.programs import PROGRAMS, build_guest_programs

log = logging.getLogger(__name__)

INIT_DIR = paths.DATA_ROOT / "guest" / "initramfs"
#: Host tools copied in with the shared libraries they load.
DYNAMIC_TOOLS = ("cxl", "daxctl", "numactl")
BUSYBOX = "/bin/busybox"
UNPRIVILEGED_UID = 1000

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    f"user:x:{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}:unprivileged user:/home/user:/bin/sh\n"
)
GROUP = f"root:x:0:\nuser:x:{UNPRIVILEGED_UID}:\n"


class InitramfsError(CxlrigError):
    """The initramfs could not be built."""


def find_host_tool(tool: str) -> Path | None:
    """``tool`` on PATH, or in the system directories a non-root PATH may lack."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
    return Path(found) if found else None


def _which(tool: str) -> Path:
    found = find_host_tool(tool)
    if found is None:
        raise InitramfsError(f"{tool} is not installed on the host (run 'make setup')")
    return found


def host_libraries(binary: Path) -> list[Path]:
    """The shared objects ``binary`` loads, the dynamic loader included."""
    res = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise InitramfsError(f"ldd {binary} failed: {res.stderr.strip()}")
    libs = []
    for line in res.stdout.splitlines():
        words = line.split()
        for w in words:
            if w.startswith("/"):
                libs.append(Path(w))
                break
    return libs


def _copy(src: Path, dest: Path, mode: int | None = None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.resolve(), dest)
    os.chmod(dest, mode if mode is not None else stat.S_IMODE(src.resolve().stat().st_mode))


def stage(root: Path) -> None:
    """Lay out the guest's file system under ``root``."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run",
              "root", "home/user", "mnt", "lib", "lib64"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    _copy(Path(BUSYBOX), root / "bin" / "busybox", 0o755)
    (root / "bin" / "sh").symlink_to("busybox")
    _copy(INIT_DIR / "init", root / "init", 0o755)
    for script in ("cxlrig-region", "cxlrig-hold", "cxlrig-phase", "cxlrig-aer",
                   "cxlrig-offline-race", "cxlrig-damon"):
        _copy(INIT_DIR / script, root / "bin" / script, 0o755)
    _copy(INIT_DIR / "cxlrig-exec", root / "etc" / "cxlrig-exec.sh", 0o644)
    _copy(INIT_DIR / "profile", root / "etc" / "profile", 0o644)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)

    programs = build_guest_programs()
    for name in PROGRAMS:
        _copy(programs / name, root / "bin" / name, 0o755)

    for tool in DYNAMIC_TOOLS:
        binary = _which(tool)
        _copy(binary, root / "usr" / "bin" / tool, 0o755)
        for lib in host_libraries(binary):
            _copy(lib, root / str(lib).lstrip("/"), 0o755)


def tree_hash(root: Path) -> str:
    parts: list[str | bytes] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            p = Path(dirpath) / name
            st = p.lstat()
            parts.append(f"{p.relative_to(root)}\0{st.st_mode:o}\0{st.st_uid}")
            if stat.S_ISREG(st.st_mode):
                parts.append(p.read_bytes())
    return digest(parts)[:20]


def build_initramfs(force: bool = False) -> Path:
    """Return the path of the (cached) gzip-compressed newc initramfs."""
    paths.require_data("guest", "initramfs")
    out_dir = paths.cache_dir() / "initramfs"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cxlrig-initramfs-") as tmp:
        root = Path(tmp) / "root"
        stage(root)
        key = tree_hash(root)
        image = out_dir / f"{key}.cpio.gz"
        if image.exists() and not force:
            log.debug("initramfs cache hit: %s", image)
            return image
        names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=root, capture_output=True,
                               check=True).stdout
        res = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "+0:+0"], cwd=root,
                             input=names, capture_output=True, check=False)
        if res.returncode != 0:
            raise InitramfsError(f"cpio failed: {res.stderr.decode(errors='replace').strip()}")
        # /home/user must stay the user's: cpio -R made every file root's,
        # so append that one directory again with its real owner.
        tmp_image = image.with_suffix(".tmp")
        with gzip.open(tmp_image, "wb", compresslevel=6) as gz:
            gz.write(_fix_home_owner(res.stdout, root))
        tmp_image.rename(image)
        log.info("built initramfs %s (%d KiB)", image, image.stat().st_size // 1024)
        return image


def _fix_home_owner(archive: bytes, root: Path) -> bytes:
    # A newc archive ends with a TRAILER!!! entry; a second archive with the
    # one directory, then the trailer, is read by the kernel in order (later
    # entries win), so the simplest correct thing is to concatenate.
    extra = subprocess.run(
        ["cpio", "--quiet", "-o", "-H", "newc", "-R", f"{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}"],
        cwd=root, input=b"home/user\n", capture_output=True, check=True).stdout
    return archive + extra
