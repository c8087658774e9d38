"""Boot a topology with a guest kernel, bring its CXL memory up, hand back a shell."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cxlrig.guest.cxl import NodeState, RegionState, bring_up
from cxlrig.guest.session import GuestSession
from cxlrig.machine.check import read_windows
from cxlrig.machine.runner import Machine, RunDir
from cxlrig.qemu.args import Plugin, QemuOptions
from cxlrig.topology.model import Topology

log = logging.getLogger(__name__)

#: nokaslr keeps physical addresses of the kernel stable run to run;
#: memory hot-added by dax_kmem stays offline until cxlrig-region onlines it
#: the way the topology says (movable by default).
BASE_APPEND = "console=ttyS0 panic=-1 nokaslr memhp_default_state=offline"


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    append: str = ""


@dataclass
class Guest:
    """A booted guest: the machine, a shell in it, and its CXL memory."""

    machine: Machine
    session: GuestSession
    regions: list[RegionState] = field(default_factory=list)
    nodes: dict[int, NodeState] = field(default_factory=dict)
    window_bases: dict[str, int] = field(default_factory=dict)
    #: Seconds from QEMU start to a shell, and for the CXL bring-up.
    boot_seconds: float = 0.0
    bring_up_seconds: float = 0.0


@contextlib.contextmanager
def booted(topo: Topology, image: GuestImage, run_dir: RunDir, *, accel: str = "tcg",
           plugin: Plugin | None = None, bring_up_cxl: bool = True) -> Iterator[Guest]:
    """Boot ``topo``; yield a :class:`Guest`; power off and stop QEMU after."""
    append = f"{BASE_APPEND} {image.append}".strip()
    opts = QemuOptions(accel=accel, kernel=image.kernel, initrd=image.initrd, append=append,
                       plugin=plugin, single_thread=plugin is not None)
    start = time.monotonic()
    with Machine(topo, opts, run_dir) as machine:
        bases = {w.id: fw.base for w, fw in zip(topo.windows, read_windows(machine),
                                                 strict=False) if fw.base is not None}
        session = GuestSession(machine)
        try:
            session.wait_ready()
            guest = Guest(machine, session, window_bases=bases,
                          boot_seconds=time.monotonic() - start)
            if bring_up_cxl:
                t0 = time.monotonic()
                guest.regions, guest.nodes = bring_up(session, topo, bases)
                guest.bring_up_seconds = time.monotonic() - t0
            yield guest
            if machine.is_running():
                session.poweroff()
        finally:
            session.close()
