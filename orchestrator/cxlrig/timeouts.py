"""Every wait in cxlrig takes its limit from here.

``CXLRIG_TIMEOUT_SCALE`` multiplies them all (a slow CI machine, a debug
kernel): one knob instead of a hunt through the code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _scale() -> float:
    try:
        return max(0.1, float(os.environ.get("CXLRIG_TIMEOUT_SCALE", "1")))
    except ValueError:
        return 1.0


@dataclass(frozen=True)
class Timeouts:
    qemu_start: float = 20.0  # QEMU process up and its QMP socket answering
    qmp_command: float = 30.0
    qemu_quit: float = 15.0  # QMP quit until the process is gone
    qemu_term: float = 5.0  # SIGTERM until the process is gone, before SIGKILL
    kvm_probe: float = 25.0  # a KVM guest must reach the end of kernel init by then
    guest_boot: float = 300.0  # TCG boot of our kernel to a shell prompt
    guest_command: float = 120.0
    #: One of the kernel's selftests under TCG (migration.c: six cases of 20 s
    #: each, as long again with the harness's own waits).
    kselftest: float = 900.0
    #: checkpatch.pl --strict on one patch (a few seconds for a 400-line patch).
    checkpatch: float = 120.0

    def scaled(self) -> Timeouts:
        k = _scale()
        return Timeouts(**{f: getattr(self, f) * k for f in self.__dataclass_fields__})


TIMEOUTS = Timeouts().scaled()
