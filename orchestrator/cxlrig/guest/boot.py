"""Boot a topology with a guest kernel, bring its CXL memory up, hand back a shell."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cxlrig.guest.cxl import NodeState, RegionState, bring_up, memdevs_by_device
from cxlrig.guest.session import GuestSession
from cxlrig.images import GuestImage
from cxlrig.machine.runner import Machine, RunDir
from cxlrig.qemu.args import Plugin, QemuOptions
from cxlrig.qemu.mtree import MemoryLayout, parse_mtree
from cxlrig.topology.model import Topology

#: Called with the machine still paused (no firmware has run) and its memory
#: tree: whatever must be in place before the first guest instruction.
BeforeStart = Callable[[Machine, MemoryLayout], None]

log = logging.getLogger(__name__)

__all__ = ["BASE_APPEND", "BeforeStart", "Guest", "GuestImage", "booted"]

#: nokaslr keeps physical addresses of the kernel stable run to run;
#: memory hot-added by dax_kmem stays offline until cxlrig-region onlines it
#: the way the topology says (movable by default).
BASE_APPEND = "console=ttyS0 panic=-1 nokaslr memhp_default_state=offline"


@dataclass
class Guest:
    """A booted guest: the machine, a shell in it, and its CXL memory."""

    machine: Machine
    session: GuestSession
    regions: list[RegionState] = field(default_factory=list)
    nodes: dict[int, NodeState] = field(default_factory=dict)
    window_bases: dict[str, int] = field(default_factory=dict)
    #: Topology device id -> the kernel's memdev name.
    memdevs: dict[str, str] = field(default_factory=dict)
    #: QEMU's memory tree, read once while the machine was paused.
    layout: MemoryLayout | None = None
    #: Seconds from QEMU start to a shell, and for the CXL bring-up.
    boot_seconds: float = 0.0
    bring_up_seconds: float = 0.0


@contextlib.contextmanager
def booted(topo: Topology, image: GuestImage, run_dir: RunDir, *, accel: str = "tcg",
           plugin: Plugin | None = None, before_start: BeforeStart | None = None,
           bring_up_cxl: bool = True) -> Iterator[Guest]:
    """Boot ``topo``; yield a :class:`Guest`; power off and stop QEMU after.

    The machine starts paused: its memory tree is read once (the CXL window
    bases come from it), ``before_start`` gets it (the plugin's map is sent
    then), and only then do the vCPUs run. One QEMU per boot.
    """
    append = f"{BASE_APPEND} {image.append}".strip()
    # The plugin needs one TCG thread; so does a machine with more vCPUs than
    # the host has CPUs: 4 MTTCG vCPU threads on 2 busy host cores stalled RCU
    # in 1 boot of 10, while one thread taking turns never did.
    single = plugin is not None or topo.cpus > len(os.sched_getaffinity(0))
    opts = QemuOptions(accel=accel, kernel=image.kernel, initrd=image.initrd, append=append,
                       plugin=plugin, single_thread=single, paused=True)
    start = time.monotonic()
    with Machine(topo, opts, run_dir) as machine:
        layout = parse_mtree(machine.hmp("info mtree -f"))
        if before_start is not None:
            before_start(machine, layout)
        machine.qmp("cont")
        bases = {w.id: base for w, (base, _) in zip(topo.windows, layout.windows, strict=False)}
        session = GuestSession(machine)
        try:
            session.wait_ready()
            guest = Guest(machine, session, window_bases=bases, layout=layout,
                          boot_seconds=time.monotonic() - start)
            if bring_up_cxl:
                t0 = time.monotonic()
                guest.regions, state = bring_up(session, topo, bases)
                guest.nodes = state.nodes
                guest.memdevs = memdevs_by_device(topo, state)
                guest.bring_up_seconds = time.monotonic() - t0
            yield guest
            if machine.is_running():
                session.poweroff()
        finally:
            session.close()
