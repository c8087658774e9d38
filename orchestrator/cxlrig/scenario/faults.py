"""Fault steps: a typed fault into a type-3 device over QMP, the guest's record of it read back.

An ``inject:`` step names its target the way a user thinks of it, a device
and a device physical address or the guest page an earlier step printed;
:func:`resolve_target` turns a page into device and DPA through the
region's interleave (:class:`cxlrig.plugin.addrmap.RegionDecode`, the same
decode the plugin attributes accesses by). :func:`qmp_command` renders the
fault as QEMU's command (pure); :func:`run_inject` sends it and reads what
the guest kernel logged (:mod:`cxlrig.guest.ras`). :func:`expected_record`
says which field of the kernel's trace record must show which injected
value; :func:`fault_checks` turns the comparison into one check a field.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from cxlrig.errors import CheckFailed
from cxlrig.guest.ras import (
    TraceRecord,
    TraceWindow,
    dpa_bases,
    trigger_poison_list,
)
from cxlrig.machine.qmp import QmpError
from cxlrig.plugin.addrmap import PAGE, RegionDecode
from cxlrig.results import Check, Step
from cxlrig.scenario.model import (
    CorrectableSpec,
    DcdAddSpec,
    DcdSpec,
    DramSpec,
    GeneralMediaSpec,
    InjectSpec,
    MemoryModuleSpec,
    PoisonSpec,
    StepSpec,
    TargetSpec,
    UncorrectableSpec,
)
from cxlrig.topology.model import Device, Topology

M = TypeVar("M", bound=BaseModel)

if TYPE_CHECKING:
    from cxlrig.guest.boot import Guest
    from cxlrig.scenario.runner import Context

#: The kernel's trace event for each kind of fault (drivers/cxl/core/trace.h).
TRACE_EVENT = {
    "poison": "cxl_poison",
    "general_media": "cxl_general_media",
    "dram": "cxl_dram",
    "memory_module": "cxl_memory_module",
    "correctable": "cxl_aer_correctable_error",
    "uncorrectable": "cxl_aer_uncorrectable_error",
}
QMP_COMMAND = {
    "poison": "cxl-inject-poison",
    "general_media": "cxl-inject-general-media-event",
    "dram": "cxl-inject-dram-event",
    "memory_module": "cxl-inject-memory-module-event",
    "correctable": "cxl-inject-correctable-error",
    "uncorrectable": "cxl-inject-uncorrectable-errors",
}
#: enum cxl_event_log_type, as the trace record's ``log`` holds it.
LOG_INDEX = {"informational": 0, "warning": 1, "failure": 2, "fatal": 3}
#: Bit of each error in the CXL RAS capability's status registers (CXL r3.0
#: 8.2.4.16.1 and .4); QEMU sets these, the kernel logs the register.
CORRECTABLE_BIT = {"cache-data-ecc": 0, "mem-data-ecc": 1, "crc-threshold": 2,
                   "retry-threshold": 3, "cache-poison-received": 4,
                   "mem-poison-received": 5, "physical": 6}
UNCORRECTABLE_BIT = {"cache-data-parity": 0, "cache-address-parity": 1, "cache-be-parity": 2,
                     "cache-data-ecc": 3, "mem-data-parity": 4, "mem-address-parity": 5,
                     "mem-be-parity": 6, "mem-data-ecc": 7, "reinit-threshold": 8,
                     "rsvd-encoding": 9, "poison-received": 10, "receiver-overflow": 11,
                     "internal": 14, "cxl-ide-tx": 15, "cxl-ide-rx": 16}
#: Validity flags of a General Media and a DRAM event record: which optional
#: field the record carries (CXL r3.0 Tables 8-43 and 8-44).
GENERAL_MEDIA_VALID = {"channel": 0, "rank": 1, "device_mask": 2, "component_id": 3}
DRAM_VALID = {"channel": 0, "rank": 1, "nibble_mask": 2, "bank_group": 3, "bank": 4, "row": 5,
              "column": 6, "correction_mask": 7}
#: The trace's hpa when the DPA is in no region.
NO_HPA = (1 << 64) - 1
#: Record fields the rig derives (from the topology, its decode, the guest's
#: names) rather than injects: messages say so.
DERIVED = frozenset({"memdev", "serial", "hpa", "region", "region_name", "validity_flags",
                     "trace_type", "first_error"})
#: Kernel log lines an inject step keeps (the last ones).
DMESG_KEEP = 200
#: The poison list's records carry this trace_type (CXL_POISON_TRACE_LIST).
POISON_TRACE_LIST = 0


class FaultError(CheckFailed):
    """A fault step cannot be carried out as written (unknown device, page outside CXL, ...)."""


@dataclass(frozen=True)
class Target:
    """Where a fault lands, resolved."""

    device: str  # the topology's id
    dpa: int
    #: The host physical address the kernel translates ``dpa`` to, or None
    #: where the DPA is in no region.
    hpa: int | None = None
    #: The kernel's name of that region ("" for none).
    region: str = ""


def qmp_path(device: str) -> str:
    """The QOM path of a device the topology names (QEMU id = topology id)."""
    return f"/machine/peripheral/{device}"


def fault_device(inject: InjectSpec, target: Target | None) -> str:
    spec = inject.spec
    if target is not None:
        return target.device
    device = getattr(spec, "device", None)
    assert isinstance(device, str)
    return device


def qmp_command(inject: InjectSpec, target: Target | None) -> tuple[str, dict[str, Any]]:
    """The QMP command and arguments that inject ``inject`` at ``target``."""
    spec = inject.spec
    kind = inject.kind
    args: dict[str, Any] = {"path": qmp_path(fault_device(inject, target))}
    if isinstance(spec, PoisonSpec):
        assert target is not None
        args.update(start=target.dpa, length=spec.length)
    elif isinstance(spec, CorrectableSpec):
        args["type"] = spec.type
    elif isinstance(spec, UncorrectableSpec):
        args["errors"] = [{"type": e.type, "header": list(e.header)} for e in spec.errors]
    elif isinstance(spec, GeneralMediaSpec | DramSpec):
        assert target is not None
        args.update(log=spec.log, flags=spec.flags, dpa=target.dpa | spec.dpa_flags,
                    descriptor=spec.descriptor, type=spec.type,
                    **{"transaction-type": spec.transaction_type})
        optional = GENERAL_MEDIA_VALID if isinstance(spec, GeneralMediaSpec) else DRAM_VALID
        for name in optional:
            value = getattr(spec, name)
            if value is not None:
                qmp_name = "device" if name == "device_mask" else name.replace("_", "-")
                args[qmp_name] = list(value) if isinstance(value, list) else value
    elif isinstance(spec, MemoryModuleSpec):
        args.update({"log": spec.log, "flags": spec.flags, "type": spec.type,
                     "health-status": spec.health_status, "media-status": spec.media_status,
                     "additional-status": spec.additional_status, "life-used": spec.life_used,
                     "temperature": spec.temperature,
                     "dirty-shutdown-count": spec.dirty_shutdown_count,
                     "corrected-volatile-error-count": spec.corrected_volatile_error_count,
                     "corrected-persistent-error-count": spec.corrected_persistent_error_count})
    return QMP_COMMAND[kind], args


def _validity(spec: GeneralMediaSpec | DramSpec) -> int:
    bits = GENERAL_MEDIA_VALID if isinstance(spec, GeneralMediaSpec) else DRAM_VALID
    return sum(1 << bit for name, bit in bits.items() if getattr(spec, name) is not None)


def expected_record(inject: InjectSpec, target: Target | None, serial: int,
                    memdev: str) -> dict[str, Any]:
    """Trace-record field -> the value injected into it (or that the kernel must derive).

    Names are the fields of the 6.12 trace event; byte arrays (``comp_id``,
    ``cor_mask``) as the kernel prints them, read back into their injected form.
    """
    spec = inject.spec
    out: dict[str, Any] = {"memdev": memdev, "serial": serial}
    where: dict[str, Any] = {}
    if target is not None:
        where = {"hpa": NO_HPA if target.hpa is None else target.hpa}
    if isinstance(spec, PoisonSpec):
        assert target is not None
        out.update(trace_type=POISON_TRACE_LIST, dpa=target.dpa, dpa_length=spec.length,
                   region=target.region, **where)
    elif isinstance(spec, CorrectableSpec):
        out["status"] = 1 << CORRECTABLE_BIT[spec.type]
    elif isinstance(spec, UncorrectableSpec):
        bits = [UNCORRECTABLE_BIT[e.type] for e in spec.errors]
        status = 0
        for b in bits:
            status |= 1 << b
        out.update(status=status, first_error=1 << bits[0])
    elif isinstance(spec, GeneralMediaSpec | DramSpec):
        assert target is not None
        out.update(log=LOG_INDEX[spec.log], hdr_flags=spec.flags, dpa=target.dpa,
                   dpa_flags=spec.dpa_flags, descriptor=spec.descriptor, type=spec.type,
                   transaction_type=spec.transaction_type, validity_flags=_validity(spec),
                   region_name=target.region, **where)
        for name in (GENERAL_MEDIA_VALID if isinstance(spec, GeneralMediaSpec) else DRAM_VALID):
            value = getattr(spec, name)
            if value is None:
                continue
            field = {"device_mask": "device", "component_id": "comp_id",
                     "correction_mask": "cor_mask"}.get(name, name)
            if name == "correction_mask":
                value = [*value, *[0] * (4 - len(value))]
            out[field] = value
    elif isinstance(spec, MemoryModuleSpec):
        out.update(log=LOG_INDEX[spec.log], hdr_flags=spec.flags, event_type=spec.type,
                   health_status=spec.health_status, media_status=spec.media_status,
                   add_status=spec.additional_status, life_used=spec.life_used,
                   device_temp=spec.temperature, dirty_shutdown_cnt=spec.dirty_shutdown_count,
                   cor_vol_err_cnt=spec.corrected_volatile_error_count,
                   cor_per_err_cnt=spec.corrected_persistent_error_count)
    return out


def observed_fields(record: TraceRecord) -> dict[str, Any]:
    """A record's fields, byte arrays read back into the form they were injected in."""
    out = dict(record.fields)
    for name, raw in record.arrays.items():
        if name == "comp_id":
            out[name] = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        elif name == "cor_mask":
            out[name] = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
    return out


def pick_record(records: list[dict[str, Any]], event: str, memdev: str,
                dpa: int | None) -> dict[str, Any] | None:
    """The record of ``event`` on ``memdev`` that reports the fault: for a DPA,
    the one at that DPA if there is one, else the first."""
    mine = [r for r in records if r.get("event") == event and r.get("memdev") == memdev]
    if dpa is not None:
        at = [r for r in mine if r.get("dpa") == dpa]
        mine = at or mine
    return mine[0] if mine else None


def roundtrip(injected: dict[str, Any], record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each injected field beside the guest's value of it."""
    out = []
    for name, want in injected.items():
        got = record.get(name) if record is not None else None
        out.append({"field": name, "injected": want, "observed": got, "ok": got == want})
    return out


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 4096:
        return hex(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def fault_checks(step: Step) -> list[Check]:
    """One check per injected field of an inject step whose record is compared.

    A missing record is one failing check naming the event and how long the
    step waited for it.
    """
    data = step.data if isinstance(step.data, dict) else {}
    if "roundtrip" not in data:
        return []
    label = step.id or f"inject: {data.get('fault')}"
    event = str(data.get("event", ""))
    if data.get("record") is None:
        return [Check(ok=False, step=label, field="record", op="roundtrip",
                      expected=event, actual=None,
                      message=f"{label}: no {event} record of {data.get('memdev')} in the "
                              f"guest's trace within {data.get('waited_s')} s")]
    checks = []
    for row in data["roundtrip"]:
        name, want, got = row["field"], row["injected"], row["observed"]
        ok = bool(row["ok"]) and want == got
        how = "the rig derives" if name in DERIVED else "injected"
        msg = (f"{label}: {event}.{name} = {_show(got)} as {how}" if ok else
               f"{label}: {event}.{name}: {how} {_show(want)}, observed {_show(got)}")
        checks.append(Check(ok=ok, message=msg, step=label, field=f"record.{name}",
                            op="roundtrip", expected=want, actual=got))
    return checks


def recheck(step: Step) -> list[Check]:
    """:func:`fault_checks` after comparing ``data.injected`` with ``data.record`` afresh."""
    data = dict(step.data)
    data["roundtrip"] = roundtrip(data["injected"], data.get("record"))
    return fault_checks(Step(**{**asdict(step), "data": data}))


# ---- resolving targets ------------------------------------------------------------------

def _decodes(topo: Topology, guest: Guest) -> list[tuple[RegionDecode, tuple[str, ...], str]]:
    """Each region the guest made: its decode, endpoint decoders by position, kernel name."""
    by_id = {r.id: r for r in topo.regions}
    out = []
    for st in guest.regions:
        reg = by_id.get(st.id)
        if reg is None or st.base < 0:
            continue
        out.append((RegionDecode(st.name, st.base, st.size, st.granularity, reg.devices),
                    st.targets, st.name))
    return out


def _address(value: Any, what: str) -> int:
    try:
        return int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise FaultError(f"{what}: {value!r} is not an address") from None


def resolve_target(spec: TargetSpec, topo: Topology, guest: Guest, ctx: Context) -> Target:
    """Device, DPA and the HPA the kernel should translate it to."""
    decodes = _decodes(topo, guest)
    if spec.page_of is not None:
        pa = _address(ctx.value(spec.page_of), f"page_of {spec.page_of}")
        pa = pa - pa % PAGE + spec.offset
        for dec, decoders, name in decodes:
            if dec.base <= pa < dec.end:
                if not dec.stripe_aligned:
                    raise FaultError(f"page_of {spec.page_of}: region {name} ({dec.ways}-way "
                                     f"at {dec.base:#x}) does not start on a whole stripe; "
                                     "its device addresses are not decoded here: name the "
                                     "target by device and dpa")
                position = dec.position(pa)
                decoder = decoders[position]
                base = dpa_bases(guest.session, (decoder,))[decoder]
                return Target(dec.devices[position], base + dec.device_offset(pa), pa, name)
        ranges = ", ".join(f"{n} [{d.base:#x}, {d.end:#x})" for d, _, n in decodes) or "none"
        raise FaultError(f"page_of {spec.page_of}: {pa:#x} is in no CXL region "
                         f"(regions: {ranges}); the page is not on CXL memory")
    assert spec.device is not None and spec.dpa is not None
    device = spec.device
    dpa = _address(ctx.resolve(spec.dpa), "dpa")
    if dpa % 64:
        raise FaultError(f"dpa {dpa:#x} is not 64-byte aligned")
    for dec, decoders, name in decodes:
        if device not in dec.devices or not dec.stripe_aligned:
            continue
        position = dec.devices.index(device)
        decoder = decoders[position]
        base = dpa_bases(guest.session, (decoder,))[decoder]
        share = dec.size // dec.ways
        if base <= dpa < base + share:
            return Target(device, dpa, dec.hpa_of(position, dpa - base), name)
    return Target(device, dpa)


def device_of(topo: Topology, device: str) -> Device:
    """The topology's ``device``, or a FaultError naming the devices there are."""
    for d in topo.devices:
        if d.id == device:
            return d
    known = ", ".join(d.id for d in topo.devices) or "none"
    raise FaultError(f"device '{device}' is not in topology {topo.name} (devices: {known})")


def resolved(spec: M, ctx: Context) -> M:
    """``spec`` with its templates (``${cxl_device}``, ``${step.field}``) filled in."""
    try:
        return type(spec).model_validate(ctx.resolve(spec.model_dump(exclude_none=True)))
    except ValidationError as exc:
        said = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                         for e in exc.errors())
        raise FaultError(f"once its templates are filled in, the step is not valid: {said}") \
            from None


def _memdev(topo: Topology, guest: Guest, device: str) -> tuple[int, str]:
    """Serial and kernel memdev name of a topology device, or a FaultError."""
    serial = device_of(topo, device).serial
    memdev = guest.memdevs.get(device)
    if memdev is None:
        raise FaultError(f"device '{device}' (serial {serial:#x}) has no memdev in the guest")
    return serial, memdev


@dataclass(frozen=True)
class _Sent:
    """A QMP command sent with the guest's trace armed, and what the guest logged."""

    data: dict[str, Any]
    records: list[dict[str, Any]]
    seconds: float


def _send_and_watch(guest: Guest, execute: str, arguments: dict[str, Any], *,
                    may_refuse: bool, settle: float, expect: dict[str, int],
                    then: Callable[[], Any] | None = None, linger: bool = False,
                    log_text: str | None = None) -> _Sent:
    """Arm the trace, send the command (``then`` runs after it, in the guest), wait up
    to ``settle`` s for ``expect`` (with ``linger`` and nothing to expect, all of
    it), and read what came. QEMU refusing the command ends the step, unless
    ``may_refuse``: then it is the step's outcome."""
    window = TraceWindow(guest.session)
    window.arm()
    start = time.monotonic()
    qmp: dict[str, Any] = {"execute": execute, "arguments": arguments}
    try:
        qmp["reply"] = guest.machine.qmp(execute, arguments)
    except QmpError as exc:
        if not may_refuse or exc.desc is None:
            raise
        qmp["refused"] = exc.desc
        expect = {}
    data: dict[str, Any] = {"qmp": qmp}
    if "refused" not in qmp and then is not None:
        data["then"] = then()
    lingered = 0.0
    if linger and not expect and "refused" not in qmp:
        time.sleep(settle)
        lingered = settle
    seen = window.collect(expect, settle, log_text if "refused" not in qmp else None)
    records = [{**r.as_json(), **observed_fields(r)} for r in seen.records]
    data.update(records=records,
                count={e: sum(1 for r in records if r["event"] == e)
                       for e in sorted({r["event"] for r in records})},
                dmesg=list(seen.dmesg[-DMESG_KEEP:]), waited_s=round(lingered + seen.waited, 2))
    return _Sent(data, records, time.monotonic() - start)


def run_inject(st: StepSpec, guest: Guest, ctx: Context, topo: Topology) -> Step:
    """Inject the step's fault; the guest's trace records and kernel log are its data."""
    assert st.inject is not None
    inject = resolved(st.inject, ctx)
    spec = inject.spec
    kind = inject.kind
    device = getattr(spec, "device", None)
    if device is not None:
        device_of(topo, device)
    target = resolve_target(spec, topo, guest, ctx) if isinstance(spec, TargetSpec) else None
    device = fault_device(inject, target)
    serial, memdev = _memdev(topo, guest, device)
    execute, arguments = qmp_command(inject, target)
    event = TRACE_EVENT[kind]
    reads_list = isinstance(spec, PoisonSpec) and spec.read_list
    # Wait for the record even where it is not compared: a step that shows the
    # kernel logs nothing must have given it the whole settle time to.
    sent = _send_and_watch(
        guest, execute, arguments, may_refuse=inject.may_refuse, settle=inject.settle,
        expect={event: 1} if reads_list or not isinstance(spec, PoisonSpec) else {},
        then=(lambda: trigger_poison_list(guest.session, memdev)) if reads_list else None,
        log_text=inject.wait_log)
    data: dict[str, Any] = {
        "fault": kind, "device": device, "memdev": memdev, "event": event,
        "target": asdict(target) if target is not None else None, **sent.data}
    if "then" in data:
        data["trigger_poison_list"] = data.pop("then")
    record = pick_record(sent.records, event, memdev, target.dpa if target else None)
    data["record"] = record
    if inject.roundtrip and "refused" not in data["qmp"]:
        data["injected"] = expected_record(inject, target, serial, memdev)
        data["roundtrip"] = roundtrip(data["injected"], record)
        data["mismatches"] = sum(1 for row in data["roundtrip"] if not row["ok"])
    return Step(id=st.id or "", kind="inject", command=json.dumps({"execute": execute,
                                                                   "arguments": arguments}),
                status=1 if "refused" in data["qmp"] else 0, seconds=sent.seconds, data=data)


def dcd_command(dcd: DcdSpec) -> tuple[str, dict[str, Any]]:
    """The QMP command and arguments of a dynamic-capacity step."""
    spec = dcd.spec
    args: dict[str, Any] = {"path": qmp_path(spec.device), "host-id": spec.host_id}
    if isinstance(spec, DcdAddSpec):
        execute = "cxl-add-dynamic-capacity"
        args["selection-policy"] = spec.policy
    else:
        execute = "cxl-release-dynamic-capacity"
        args.update({"removal-policy": spec.policy, "forced-removal": spec.forced,
                     "sanitize-on-release": spec.sanitize})
    args["region"] = spec.region
    if spec.tag is not None:
        args["tag"] = spec.tag
    args["extents"] = [{"offset": e.offset, "len": e.length} for e in spec.extents]
    return execute, args


#: What the guest shows of a memdev's capacity: its partitions and any extents.
_CAPACITY = ("cd /sys/bus/cxl/devices/{memdev} && for f in *; do case $f in "
             "ram|pmem|dc*) echo part $f $(cat $f/size 2>/dev/null);; esac; done; "
             "for e in /sys/bus/cxl/devices/*/extent* /sys/bus/cxl/devices/*/*/extent*; do "
             "[ -e $e ] && echo extent ${{e#/sys/bus/cxl/devices/}}; done; true")


def run_dcd(st: StepSpec, guest: Guest, ctx: Context, topo: Topology) -> Step:
    """Add or release dynamic capacity; the guest's records, log and capacity are its data."""
    assert st.dcd is not None
    dcd = resolved(st.dcd, ctx)
    device = dcd.spec.device
    if not device_of(topo, device).dc_size:
        raise FaultError(f"device '{device}' has no dynamic capacity in topology {topo.name}")
    _, memdev = _memdev(topo, guest, device)
    execute, arguments = dcd_command(dcd)
    # No record is known to answer a capacity change: the guest gets all of settle.
    sent = _send_and_watch(guest, execute, arguments, may_refuse=dcd.may_refuse,
                           settle=dcd.settle, expect={}, linger=True)
    res = guest.session.run(_CAPACITY.format(memdev=memdev), timeout=None)
    partitions, extents = {}, []
    for line in res.stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "part":
            partitions[words[1]] = int(words[2], 0)
        elif len(words) == 2 and words[0] == "extent":
            extents.append(words[1])
    data = {"fault": f"dcd_{dcd.kind}", "device": device, "memdev": memdev, **sent.data,
            "partitions": partitions, "extents": extents}
    return Step(id=st.id or "", kind="dcd", command=json.dumps({"execute": execute,
                                                                "arguments": arguments}),
                status=1 if "refused" in data["qmp"] else 0, seconds=sent.seconds, data=data)
