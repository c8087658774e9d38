"""What the installed QEMU can do, asked once per process."""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass

CXL_DEVICES = ("pxb-cxl", "cxl-rp", "cxl-upstream", "cxl-downstream", "cxl-type3")


@dataclass(frozen=True)
class QemuCaps:
    binary: str
    version: tuple[int, int, int] | None
    version_text: str
    devices: frozenset[str]
    plugins: bool

    @property
    def missing_cxl_devices(self) -> list[str]:
        return [d for d in CXL_DEVICES if d not in self.devices]


def _run(argv: list[str]) -> str | None:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout + res.stderr if res.returncode == 0 else None


@functools.cache
def probe(binary: str = "qemu-system-x86_64") -> QemuCaps:
    text = _run([binary, "--version"]) or ""
    first = text.splitlines()[0] if text else ""
    version = None
    words = first.split()
    if len(words) >= 4 and words[2] == "version":
        try:
            major, minor, micro = [*(int(x) for x in words[3].split(".")[:3]), 0, 0][:3]
            version = (major, minor, micro)
        except ValueError:
            version = None
    devices: set[str] = set()
    for line in (_run([binary, "-device", "help"]) or "").splitlines():
        line = line.strip()
        if line.startswith("name "):
            devices.add(line.split('"')[1])
    plugins = _run([binary, "-plugin", "help"]) is not None
    return QemuCaps(binary, version, first, frozenset(devices), plugins)
