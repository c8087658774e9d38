"""Fault steps without a guest: validation, QMP rendering, the kernel's trace
read back (from traces a 6.12 guest logged, kept in tests/unit/trace/), the
field-by-field comparison and its messages, and the interleave decode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path, PurePath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxlrig.guest.ras import parse_fields, parse_signed, parse_trace
from cxlrig.plugin.addrmap import RegionDecode
from cxlrig.qemu.args import QemuOptions, build_argv, hotplug_commands
from cxlrig.results import Step
from cxlrig.scenario.faults import (
    NO_HPA,
    Target,
    dcd_command,
    expected_record,
    fault_checks,
    observed_fields,
    pick_record,
    qmp_command,
    recheck,
    roundtrip,
)
from cxlrig.scenario.model import (
    DcdSpec,
    InjectSpec,
    ScenarioError,
    load_scenario,
    topology_facts,
)
from cxlrig.topology import load
from cxlrig.topology.model import LEGAL_GRANULARITY, LEGAL_WAYS

from ..conftest import REPO

TRACES = Path(__file__).parent / "trace"
SPLIT = "=====cxlrig-trace-split=====\n"


def records(name: str) -> list[dict[str, Any]]:
    """The records of one captured collect() output, as an inject step keeps them."""
    raw, text, formats, _ = (TRACES / f"{name}.txt").read_text().split(SPLIT)
    return [{**r.as_json(), **observed_fields(r)}
            for r in parse_trace(raw, text, parse_signed(formats))]


def inject(doc: dict[str, Any]) -> InjectSpec:
    return InjectSpec.model_validate(doc)


MEDIA = inject({"event": {"general_media": {
    "page_of": "wl.pages[1].pa", "offset": 0x140, "log": "warning", "flags": 1, "dpa_flags": 1,
    "descriptor": 3, "type": 1, "transaction_type": 2, "channel": 3, "rank": 4,
    "device_mask": 0x12345, "component_id": "cxlrig-gm-01"}}})
MEDIA_AT = Target("mem1", 0x140, 0x110001140, "region0")
DRAM = inject({"event": {"dram": {
    "device": "mem1", "dpa": 0x2040, "log": "failure", "flags": 2, "descriptor": 4, "type": 2,
    "transaction_type": 3, "channel": 1, "rank": 2, "nibble_mask": 0x5A5A, "bank_group": 5,
    "bank": 6, "row": 0x1234, "column": 0x56, "correction_mask": [0x1111, 0x2222]}}})
DRAM_AT = Target("mem1", 0x2040, 0x110005040, "region0")
MODULE = inject({"event": {"memory_module": {
    "device": "mem0", "log": "fatal", "type": 3, "health_status": 2, "media_status": 1,
    "additional_status": 5, "life_used": 42, "temperature": -17, "dirty_shutdown_count": 7,
    "corrected_volatile_error_count": 9, "corrected_persistent_error_count": 11}}})
POISON = inject({"poison": {"page_of": "wl.pages[1].pa", "offset": 128}})
POISON_AT = Target("mem1", 0x80, 0x110001080, "region0")


def test_qmp_commands_are_qemus() -> None:
    assert qmp_command(MEDIA, MEDIA_AT) == ("cxl-inject-general-media-event", {
        "path": "/machine/peripheral/mem1", "log": "warning", "flags": 1, "dpa": 0x141,
        "descriptor": 3, "type": 1, "transaction-type": 2, "channel": 3, "rank": 4,
        "device": 0x12345, "component-id": "cxlrig-gm-01"})
    name, args = qmp_command(DRAM, DRAM_AT)
    assert name == "cxl-inject-dram-event"
    assert args["correction-mask"] == [0x1111, 0x2222] and args["bank-group"] == 5
    assert args["nibble-mask"] == 0x5A5A and args["dpa"] == 0x2040
    assert qmp_command(POISON, POISON_AT) == ("cxl-inject-poison", {
        "path": "/machine/peripheral/mem1", "start": 0x80, "length": 64})
    assert qmp_command(inject({"correctable": {"device": "mem0", "type": "physical"}}),
                       None) == ("cxl-inject-correctable-error",
                                 {"path": "/machine/peripheral/mem0", "type": "physical"})
    name, args = qmp_command(inject({"uncorrectable": {"device": "mem1", "errors": [
        {"type": "internal", "header": [1, 2]}]}}), None)
    assert (name, args["errors"]) == ("cxl-inject-uncorrectable-errors",
                                      [{"type": "internal", "header": [1, 2]}])
    name, args = qmp_command(MODULE, None)
    assert args["temperature"] == -17 and args["corrected-persistent-error-count"] == 11
    # Optional fields left out are not sent (QEMU then leaves their validity bit clear).
    _, bare = qmp_command(inject({"event": {"dram": {"device": "mem0", "dpa": 0}}}),
                          Target("mem0", 0))
    assert "channel" not in bare and "correction-mask" not in bare


@pytest.mark.parametrize("name,spec,target,serial,memdev", [
    ("general_media", MEDIA, MEDIA_AT, 2, "mem0"),
    ("dram", DRAM, DRAM_AT, 2, "mem0"),
    ("memory_module", MODULE, None, 1, "mem1"),
    ("poison", POISON, POISON_AT, 2, "mem0"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_logged_record_matches_its_injection_field_by_field(
        name: str, spec: InjectSpec, target: Target | None, serial: int, memdev: str) -> None:
    # The captured traces come from ras-event-records and ras-poison on a
    # 6.12 guest, where the kernel named topology device mem1 "mem0" and mem0 "mem1".
    found = records(name)
    event = {"general_media": "cxl_general_media", "dram": "cxl_dram",
             "memory_module": "cxl_memory_module", "poison": "cxl_poison"}[name]
    record = pick_record(found, event, memdev, target.dpa if target else None)
    assert record is not None
    rows = roundtrip(expected_record(spec, target, serial, memdev), record)
    assert [r for r in rows if not r["ok"]] == []
    assert len(rows) >= 7


def test_trace_values_are_read_as_the_kernel_stored_them() -> None:
    media, = records("general_media")
    assert media["comp_id"] == "cxlrig-gm-01"  # a byte array, from the event's own format
    assert media["hpa"] == 0x110001140 and media["region_name"] == "region0"
    assert "hdr_uuid" not in media  # tracefs cannot print it raw
    module, = records("memory_module")
    assert module["device_temp"] == -17  # tracefs prints 0xffef: the sign is the format's
    dram = records("dram")[0]
    assert dram["cor_mask"] == [0x1111, 0x2222, 0, 0]
    unc, = records("uncorrectable")
    assert (unc["status"], unc["first_error"]) == (0x4080, 0x80)
    assert "first_error: 'Memory Data ECC Error'" in unc["text"]
    assert records("masked") == []
    assert parse_fields(" a=0xffffffffffffffff (-1) b=(7) c='A'(65) d=x y=") == {
        "a": NO_HPA, "b": 7, "c": 65, "d": "x", "y": ""}


def step_of(spec: InjectSpec, target: Target | None, got: dict[str, Any] | None,
            step_id: str = "media") -> Step:
    injected = expected_record(spec, target, 2, "mem0")
    return Step(id=step_id, kind="inject", data={
        "fault": spec.kind, "event": "cxl_dram", "memdev": "mem0", "waited_s": 10.0,
        "injected": injected, "record": got, "roundtrip": roundtrip(injected, got)})


def test_a_flipped_field_fails_naming_field_injected_and_observed() -> None:
    record = pick_record(records("dram"), "cxl_dram", "mem0", 0x2040)
    good = step_of(DRAM, DRAM_AT, record, "dram")
    checks = fault_checks(good)
    assert checks and all(c.ok for c in checks)
    assert "dram: cxl_dram.dpa = 0x2040 as injected" in [c.message for c in checks]
    # The injection said 0x2080; the guest logged 0x2040.
    flipped = replace(good, data={**good.data,
                                  "injected": {**good.data["injected"], "dpa": 0x2080}})
    bad = [c for c in recheck(flipped) if not c.ok]
    assert [c.message for c in bad] == ["dram: cxl_dram.dpa: injected 0x2080, observed 0x2040"]
    assert (bad[0].field, bad[0].expected, bad[0].actual) == ("record.dpa", 0x2080, 0x2040)
    # A derived field says so.
    moved = replace(good, data={**good.data,
                                "injected": {**good.data["injected"], "hpa": 0x110009040}})
    assert [c.message for c in recheck(moved) if not c.ok] == [
        "dram: cxl_dram.hpa: the rig derives 0x110009040, observed 0x110005040"]


def test_no_record_is_one_failing_check() -> None:
    checks = fault_checks(step_of(DRAM, DRAM_AT, None, "dram"))
    assert [(c.ok, c.message) for c in checks] == [
        (False, "dram: no cxl_dram record of mem0 in the guest's trace within 10.0 s")]
    # A step that does not compare (roundtrip: false) adds no check.
    assert fault_checks(Step(id="x", kind="inject", data={"fault": "correctable"})) == []


def test_expected_records_of_errors_are_status_bits() -> None:
    ce = inject({"correctable": {"device": "mem0", "type": "mem-data-ecc"}})
    assert expected_record(ce, None, 1, "mem0") == {"memdev": "mem0", "serial": 1,
                                                    "status": 2}
    ue = inject({"uncorrectable": {"device": "mem1", "errors": [
        {"type": "mem-data-ecc"}, {"type": "internal"}]}})
    assert expected_record(ue, None, 2, "mem1") == {
        "memdev": "mem1", "serial": 2, "status": 0x4080, "first_error": 0x80}
    unmapped = expected_record(DRAM, Target("mem0", 0x10000000), 1, "mem0")
    assert (unmapped["hpa"], unmapped["region_name"]) == (NO_HPA, "")


BAD = {
    "inject: {poison: {device: mem0}}":
        "steps[1].inject.poison: a target needs device and dpa, or page_of",
    "inject: {poison: {device: mem0, dpa: 0x41}}":
        "steps[1].inject.poison: dpa 0x41 is not 64-byte aligned",
    "inject: {poison: {device: mem0, dpa: 0, page_of: a.pa}}":
        "steps[1].inject.poison: name the target either by page_of or by device and dpa",
    "inject: {poison: {page_of: nope.pa}}":
        "steps[1].inject.poison.page_of: no earlier step 'nope'",
    "inject: {event: {general_media: {device: m, dpa: 0, component_id: "
    "'0123456789abcdef'}}}":
        "steps[1].inject.event.general_media.component_id: String should have at most 15 "
        "characters",
    "inject: {event: {dram: {device: m, dpa: 0}, memory_module: {device: m}}}":
        "steps[1].inject.event: an event is exactly one of general_media, dram, memory_module "
        "(has dram, memory_module)",
    "inject: {correctable: {device: mem0, type: cpu-on-fire}}":
        "steps[1].inject.correctable.type: must be 'cache-data-ecc', 'mem-data-ecc', "
        "'crc-threshold', 'retry-threshold', 'cache-poison-received', 'mem-poison-received' "
        "or 'physical'",
    "inject: {uncorrectable: {device: mem0, errors: []}}":
        "steps[1].inject.uncorrectable.errors: List should have at least 1 item",
    "inject: {event: {memory_module: {device: mem0, temperature: 40000}}}":
        "steps[1].inject.event.memory_module.temperature: must be less than or equal to 32767",
    "inject: {}":
        "steps[1].inject: inject takes exactly one of poison, correctable, uncorrectable, event",
    "inject: {settle: 0, poison: {device: mem0, dpa: 0}}":
        "steps[1].inject.settle: must be greater than 0",
}




@given(ways=st.sampled_from(LEGAL_WAYS), gran=st.sampled_from(LEGAL_GRANULARITY),
       stripes=st.integers(1, 64), data=st.data())
def test_decode_and_its_inverse_agree(ways: int, gran: int, stripes: int,
                                      data: st.DataObject) -> None:
    devices = tuple(f"mem{i}" for i in range(ways))
    # A 256 MiB-aligned base, and one past a whole number of stripes of it.
    base = 0x110000000 + data.draw(st.sampled_from([0, gran * ways]))
    dec = RegionDecode("r", base, stripes * gran * ways, gran, devices)
    if not dec.stripe_aligned:
        assert ways in (3, 6, 12)
        return
    pa = data.draw(st.integers(base, dec.end - 1))
    position, offset = dec.position(pa), dec.device_offset(pa)
    assert dec.device_of(pa) == devices[position]
    assert 0 <= offset < dec.size // ways
    assert dec.hpa_of(position, offset) == pa
    with pytest.raises(ValueError):
        dec.hpa_of(ways, 0)


def test_dynamic_capacity_steps_render_qemus_commands() -> None:
    add = DcdSpec.model_validate({"add": {"device": "dcd0", "region": 1, "tag": "t1",
                                          "extents": [{"offset": "2M", "length": "128M"}]}})
    assert dcd_command(add) == ("cxl-add-dynamic-capacity", {
        "path": "/machine/peripheral/dcd0", "host-id": 0, "selection-policy": "prescriptive",
        "region": 1, "tag": "t1", "extents": [{"offset": 2 << 20, "len": 128 << 20}]})
    release = DcdSpec.model_validate({"release": {
        "device": "dcd0", "forced": True, "policy": "tag-based",
        "extents": [{"offset": 0, "length": 4096}]}})
    assert dcd_command(release) == ("cxl-release-dynamic-capacity", {
        "path": "/machine/peripheral/dcd0", "host-id": 0, "removal-policy": "tag-based",
        "forced-removal": True, "sanitize-on-release": False, "region": 0,
        "extents": [{"offset": 0, "len": 4096}]})


DCD_BAD = {
    "dcd: {add: {device: d, extents: [{offset: 0, length: 1M}]}, release: {device: d, "
    "extents: [{offset: 0, length: 1M}]}}": "steps[1].dcd: dcd takes exactly one of add, release",
    "dcd: {add: {device: d, extents: []}}": "steps[1].dcd.add.extents: List should have at least",
    "dcd: {add: {device: d, region: 8, extents: [{offset: 0, length: 1M}]}}":
        "steps[1].dcd.add.region: must be less than or equal to 7",
    "dcd: {add: {device: d, extents: [{offset: 0, length: 0}]}}":
        "steps[1].dcd.add.extents[0].length: must be greater than 0",
    "dcd: {release: {device: d, policy: free, extents: [{offset: 0, length: 1M}]}}":
        "steps[1].dcd.release.policy: must be 'tag-based' or 'prescriptive'",
}




def test_a_device_absent_at_boot_waits_for_its_hotplug() -> None:
    topo = load(REPO / "topologies" / "hotplug.yaml")
    mem0, mem1 = topo.devices
    assert (mem0.present, mem1.present) == (True, False)
    assert [r.id for r in topo.booted_regions] == ["region0"]
    assert [r.deferred for r in topo.regions] == [False, True]
    argv = " ".join(build_argv(topo, QemuOptions()))
    assert "id=mem0" in argv and "mem1" not in argv  # its port is empty at boot
    # Hot-adding it gives QEMU what the command line would have.
    assert hotplug_commands(mem1, PurePath("/run/mem1.cdat")) == [
        ("object-add", {"qom-type": "memory-backend-ram", "id": "mem1.vmem",
                        "size": 256 << 20}),
        ("device_add", {"driver": "cxl-type3", "bus": "rp1", "volatile-memdev": "mem1.vmem",
                        "cdat": "/run/mem1.cdat", "id": "mem1", "sn": mem1.serial})]
    # A second plug of the same device brings backends of its own.
    again = hotplug_commands(mem1, None, plug=1)
    assert again[0][1]["id"] == again[1][1]["volatile-memdev"] == "mem1.vmem.1"
    facts = topology_facts(topo)
    assert (facts["ram_regions"], facts["absent_devices"]) == (1, 1)


HOTPLUG_BAD = {
    "hotplug: {add: mem1, remove: mem1}": "steps[1].hotplug: hotplug takes exactly one of add, "
                                          "remove",
    "hotplug: {}": "steps[1].hotplug: hotplug takes exactly one of add, remove",
    "hotplug: {add: 'mem 1'}": "steps[1].hotplug.add: 'mem 1' is not a valid name (a letter, "
                               "then letters, digits, '-' or '_', at most 40), nor a template",
    "hotplug: {remove: mem1, settle: 0}": "steps[1].hotplug.settle: must be greater than 0",
}


@pytest.mark.parametrize("step", [*BAD, *DCD_BAD, *HOTPLUG_BAD],
                         ids=range(len(BAD) + len(DCD_BAD) + len(HOTPLUG_BAD)))
def test_bad_fault_steps_are_located(tmp_path: Path, step: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\ntitle: t\npoint: p\nsteps:\n  - {id: a, run: 'true'}\n"
                    f"  - {{id: f, {step}}}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    said = [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems]
    want = {**BAD, **DCD_BAD, **HOTPLUG_BAD}[step]
    assert any(p.startswith("x.yaml:6:") and want in p for p in said), said
