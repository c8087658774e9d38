"""Hotplug steps: a type-3 device added to its empty port of the running machine, or removed.

A topology declares the device with ``present: false``: QEMU starts with its
port empty. ``hotplug: {add: DEVICE}`` creates its memory backends and the
device (:func:`cxlrig.qemu.args.hotplug_commands`, the same properties the
command line would give), waits until the guest's CXL driver shows its
memdev, and then creates and onlines every region whose devices are now all
there, as bring-up does at boot. ``hotplug: {remove: DEVICE}`` asks QEMU to
unplug it (the guest's PCIe hotplug driver must let go) and waits until QEMU
no longer has it. The step's data is what the guest showed before and after.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from cxlrig.guest.cxl import create_regions, read_state
from cxlrig.guest.ras import TraceWindow
from cxlrig.machine.qmp import QmpError
from cxlrig.qemu.args import hotplug_commands
from cxlrig.results import Step
from cxlrig.scenario.faults import DMESG_KEEP, FaultError, device_of, resolved
from cxlrig.scenario.model import StepSpec
from cxlrig.topology.model import Topology

if TYPE_CHECKING:
    from cxlrig.guest.boot import Guest
    from cxlrig.scenario.runner import Context

#: How often a hotplug step looks again.
_POLL_S = 0.25


def guest_cxl_state(guest: Guest) -> dict[str, Any]:
    """The guest's memdevs (name -> serial), regions (name -> committed) and nodes (kB),
    as bring-up's :func:`cxlrig.guest.cxl.read_state` reads them."""
    state = read_state(guest.session)
    return {"memdevs": dict(state.memdev_serials),
            "regions": {name: int(commit == "commit") for name, commit in state.regions.items()},
            "node_kb": {str(n): node.mem_total // 1024 for n, node in state.nodes.items()}}


def _in_qemu(guest: Guest, device: str) -> bool:
    listed = guest.machine.qmp("qom-list", {"path": "/machine/peripheral"})
    return any(isinstance(p, dict) and p.get("name") == device for p in listed)


def run_hotplug(st: StepSpec, guest: Guest, ctx: Context, topo: Topology) -> Step:
    """Add or remove a device; what the guest shows before and after is the step's data."""
    assert st.hotplug is not None
    spec = resolved(st.hotplug, ctx)
    adding = spec.add is not None
    name = spec.add if spec.add is not None else spec.remove
    assert name is not None
    dev = device_of(topo, name)
    present = _in_qemu(guest, dev.id)
    if adding and present:
        raise FaultError(f"hotplug add: device '{dev.id}' is already in the machine "
                         "(declare it present: false, or remove it first)")
    if not adding and not present:
        raise FaultError(f"hotplug remove: device '{dev.id}' is not in the machine")
    window = TraceWindow(guest.session)
    window.arm()
    before = guest_cxl_state(guest)
    start = time.monotonic()
    sent: list[dict[str, Any]] = []
    data: dict[str, Any] = {"action": "add" if adding else "remove", "device": dev.id,
                            "serial": dev.serial, "before": before, "qmp": sent}
    plugs = ctx.plugs.get(dev.id, 0 if dev.present else -1) + 1 if adding else 0
    commands = hotplug_commands(dev, guest.machine.cdat_file(dev.id), plugs) if adding else \
        [("device_del", {"id": dev.id})]
    if adding:
        ctx.plugs[dev.id] = plugs
    try:
        for execute, arguments in commands:
            sent.append({"execute": execute, "arguments": arguments,
                         "reply": guest.machine.qmp(execute, arguments)})
    except QmpError as exc:
        if not spec.may_refuse or exc.desc is None:
            raise
        data["refused"] = exc.desc
    took: float | None = None
    memdev: str | None = None
    if "refused" not in data:
        deadline = start + spec.settle
        while took is None:
            if adding:
                memdev = next((m for m, s in guest_cxl_state(guest)["memdevs"].items()
                               if s == dev.serial), None)
                gone_or_there = memdev is not None
            else:
                gone_or_there = not _in_qemu(guest, dev.id)
            if gone_or_there:
                took = time.monotonic() - start
            elif time.monotonic() >= deadline:
                break  # the guest did not: an outcome, not an error
            else:
                time.sleep(_POLL_S)
    # add: the guest showed the memdev; remove: QEMU let the device go.
    data["done"] = took is not None
    data["seconds"] = None if took is None else round(took, 2)
    if adding and memdev is not None:
        guest.memdevs[dev.id] = memdev
        ctx.vars[f"memdev_{dev.id}"] = memdev
        data["memdev"] = memdev
        if spec.regions:
            data["regions"] = _make_regions(guest, ctx, topo, dev.id)
    elif not adding and data["done"]:
        data["memdev"] = guest.memdevs.pop(dev.id, None)
    seen = window.collect({}, 0)
    data.update(after=guest_cxl_state(guest), dmesg=list(seen.dmesg[-DMESG_KEEP:]),
                records=[r.as_json() for r in seen.records])
    if not adding and data["done"]:
        # What the kernel left of the device's regions is in "after"; like
        # 'cxl destroy-region', delete them, so that a later add makes them anew.
        data["deleted_regions"] = _delete_regions(guest, dev.id, topo)
    return Step(id=st.id or "", kind="hotplug",
                command=json.dumps([{"execute": e, "arguments": a} for e, a in commands]),
                status=1 if "refused" in data else 0, seconds=time.monotonic() - start,
                data=data)


def _make_regions(guest: Guest, ctx: Context, topo: Topology, added: str) -> list[dict[str, Any]]:
    """Create and online the regions that waited for ``added`` and have all their devices."""
    made = {r.id for r in guest.regions}
    ready = [r for r in topo.regions if added in r.devices and r.id not in made
             and all(d in guest.memdevs for d in r.devices)]
    states = create_regions(guest.session, topo, guest.window_bases, ready)
    for reg in states:
        guest.regions.append(reg)
        ctx.vars[f"region_base_{reg.id}"] = f"{reg.base:#x}"
        ctx.vars[f"region_name_{reg.id}"] = reg.name
        ctx.vars[f"region_node_{reg.id}"] = reg.node
    return [asdict(r) for r in states]


def _delete_regions(guest: Guest, device: str, topo: Topology) -> list[str]:
    """Delete the guest's regions that ``device`` took part in; their kernel names."""
    ids = {r.id for r in topo.regions if device in r.devices}
    deleted = []
    for reg in [r for r in guest.regions if r.id in ids]:
        res = guest.session.run(
            f"for d in /sys/bus/cxl/devices/decoder0.*; do [ -e $d/delete_region ] && "
            f"echo {reg.name} > $d/delete_region 2>/dev/null; done; "
            f"[ ! -e /sys/bus/cxl/devices/{reg.name} ]", timeout=None)
        if res.ok:
            guest.regions.remove(reg)
            deleted.append(reg.name)
    return deleted
