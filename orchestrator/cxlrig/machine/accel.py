"""Choosing the accelerator: TCG unless KVM has *proven* it boots a guest.

On some hosts /dev/kvm opens, yet a KVM guest hangs after the firmware or
QEMU aborts on an MSR write (nested virtualization). So ``auto`` boots the
actual guest kernel under KVM with a short timeout and accepts KVM only if
the kernel ran to the end of its start-up (it panics for want of a root file
system: that message proves the CPU, timers and console all worked). The
answer is cached per (QEMU, host kernel, guest kernel).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cxlrig.errors import CxlrigError
from cxlrig.files import write_atomic
from cxlrig.machine.runner import set_pdeathsig
from cxlrig.paths import cache_dir
from cxlrig.qemu.probe import probe
from cxlrig.timeouts import TIMEOUTS

log = logging.getLogger(__name__)

_END_OF_INIT = ("Kernel panic - not syncing", "Run /init as init process")


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "tcg" or "kvm"
    reason: str


def kvm_device_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def resolve_accel(requested: str, kernel: Path | None,
                  binary: str = "qemu-system-x86_64") -> AccelChoice:
    if requested == "tcg":
        return AccelChoice("tcg", "asked for")
    if requested == "kvm":
        if not kvm_device_usable():
            raise CxlrigError("--accel kvm: /dev/kvm is missing or not accessible")
        return AccelChoice("kvm", "asked for")
    if requested != "auto":
        raise CxlrigError(f"unknown accelerator {requested!r} (auto, kvm or tcg)")
    if not kvm_device_usable():
        return AccelChoice("tcg", "/dev/kvm is not usable")
    if kernel is None:
        return AccelChoice("tcg", "no guest kernel to prove KVM with")
    ok, detail = cached_kvm_probe(kernel, binary)
    return AccelChoice("kvm" if ok else "tcg", detail)


def _probe_key(kernel: Path, binary: str) -> str:
    h = hashlib.sha256()
    h.update(probe(binary).version_text.encode())
    h.update(platform.release().encode())
    st = kernel.stat()
    h.update(f"{kernel.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cached_kvm_probe(kernel: Path, binary: str = "qemu-system-x86_64") -> tuple[bool, str]:
    path = cache_dir() / "kvm-probe" / f"{_probe_key(kernel, binary)}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        data = json.loads(path.read_text())
        return bool(data["ok"]), f"{data['detail']} (cached)"
    ok, detail = probe_kvm(kernel, binary)
    write_atomic(path, json.dumps({"ok": ok, "detail": detail}).encode())
    return ok, detail


def last_kvm_probe() -> tuple[bool, str] | None:
    """The verdict of the most recent KVM probe on this machine, if any was made."""
    probes = sorted((cache_dir() / "kvm-probe").glob("*.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(probes):
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(path.read_text())
            return bool(data["ok"]), str(data["detail"])
    return None


def probe_kvm(kernel: Path, binary: str = "qemu-system-x86_64") -> tuple[bool, str]:
    """Boot ``kernel`` under KVM with no root file system; True if it got there."""
    timeout = TIMEOUTS.kvm_probe
    with tempfile.TemporaryDirectory(prefix="cxlrig-kvm-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [binary, "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256M",
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-serial", f"file:{console}", "-kernel", str(kernel),
                "-append", "console=ttyS0 panic=-1"]
        start = time.monotonic()
        with open(Path(tmp) / "qemu.log", "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=set_pdeathsig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        text = console.read_text(errors="replace") if console.exists() else ""
        qemu_out = (Path(tmp) / "qemu.log").read_text(errors="replace").strip()
    took = time.monotonic() - start
    if any(marker in text for marker in _END_OF_INIT):
        return True, f"a KVM guest booted to the end of kernel init in {took:.1f} s"
    if proc.returncode not in (0, None) and qemu_out:
        return False, f"QEMU with KVM failed: {qemu_out.splitlines()[-1]}"
    last = text.strip().splitlines()[-1] if text.strip() else "no console output"
    return False, f"a KVM guest did not finish booting within {timeout:.0f} s (last: {last[:80]})"
