"""What cxlrig needs on this machine, each prerequisite checked where it is used."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from cxlrig.images.initramfs import find_host_tool
from cxlrig.images.kernel import DEFAULT_TARBALL
from cxlrig.machine.accel import kvm_device_usable, last_kvm_probe
from cxlrig.paths import cache_dir
from cxlrig.plugin.build import plugin_header_dir
from cxlrig.qemu.probe import probe

#: Tools the initramfs copies from this machine.
GUEST_TOOLS = ("busybox", "cxl", "daxctl", "numactl")


@dataclass(frozen=True)
class Prerequisite:
    what: str
    ok: bool
    detail: str
    #: A missing required prerequisite makes ``cxlrig doctor`` exit 1.
    required: bool = True


def disk_usage(path: Path) -> int:
    """Bytes under ``path`` (files as they are, links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def prerequisites() -> list[Prerequisite]:
    caps = probe()
    rows: list[Prerequisite] = []
    ver = ".".join(map(str, caps.version)) if caps.version else "not installed"
    rows.append(Prerequisite("QEMU 10 or newer", bool(caps.version and caps.version >= (10, 0, 0)),
                             caps.version_text or ver))
    missing = caps.missing_cxl_devices
    rows.append(Prerequisite("QEMU CXL devices", not missing,
                             "all present" if not missing else "missing: " + ", ".join(missing)))
    rows.append(Prerequisite("QEMU TCG plugins", caps.plugins,
                             "enabled" if caps.plugins else "-plugin not supported"))
    header = plugin_header_dir() / "qemu-plugin.h"
    rows.append(Prerequisite("QEMU plugin header", header.exists(), str(header)))
    rows.append(Prerequisite("Linux 6.12 source", DEFAULT_TARBALL.exists(), str(DEFAULT_TARBALL)))
    for tool in GUEST_TOOLS:
        path = find_host_tool(tool)
        rows.append(Prerequisite(f"guest tool {tool}", path is not None,
                                 str(path) if path else "not installed"))
    kvm_detail = "usable device; `auto` still proves KVM by booting the guest kernel" \
        if kvm_device_usable() else "no usable /dev/kvm: TCG"
    last = last_kvm_probe()
    if last is not None:
        kvm_detail = ("proven: " if last[0] else "refused: ") + last[1]
    rows.append(Prerequisite("KVM", True, kvm_detail, required=False))
    cache = cache_dir()
    rows.append(Prerequisite("cache", True, f"{cache} ({disk_usage(cache) / (1 << 20):.0f} MiB)",
                             required=False))
    return rows
