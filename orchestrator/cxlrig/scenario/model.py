"""Scenario files: what a reviewer asked, as steps and per-variant expectations.

A scenario names its topology and kernel variants, a list of steps (guest
commands as root or as the unprivileged user, plugin phase marks, QMP
commands, a promotion policy), and what each variant must show. Loaded with
the same located errors as topologies: ``FILE:LINE:COL: key.path: message``.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cxlrig.errors import CheckFailed
from cxlrig.images.variants import VARIANTS
from cxlrig.topology.model import Topology
from cxlrig.topology.schema import Size
from cxlrig.topology.validate import shape_problems
from cxlrig.topology.yamlmarks import Located, Problem, YamlLoadError, read_located

Ident = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _exactly_one(model: BaseModel, keys: tuple[str, ...], says: str) -> None:
    """Raise unless exactly one of ``keys`` is given: "<says> exactly one of ... (has ...)"."""
    given = [k for k in keys if getattr(model, k) is not None]
    if len(given) != 1:
        raise ValueError(f"{says} exactly one of {', '.join(keys)}"
                         + (f" (has {', '.join(given)})" if given else ""))


class PromoteSpec(_Strict):
    """Move the hottest pages of a node, as the plugin ranked them in a phase."""

    phase: str  # the plugin phase whose per-page counts rank the pages
    source_node: int | str = "${cxl_node}"
    target_node: int | str = 0
    top: Annotated[int, Field(ge=1, le=4096)] = 16
    via: Literal["phys", "virt"] = "phys"
    #: Step whose JSON lists the workload's pages (pid, va, pa), for via: virt.
    pages_from: str | None = None


class MeasureSpec(_Strict):
    """Turn a step's JSON into one point of a named series for the report."""

    series: str
    x_name: str
    x: float | str
    y: str = "timing.median_ns"  # a field of the step's data
    per: str | None = "first_call.n"  # divide y (and min/max) by this field
    y_name: str = "ns per page"
    min: str | None = "timing.min_ns"
    max: str | None = "timing.max_ns"


class QmpSpec(_Strict):
    """A QMP command sent to the machine, its reply the step's data."""

    execute: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    arguments: dict[str, Any] | None = None


U8 = Annotated[int, Field(ge=0, le=0xFF)]
U16 = Annotated[int, Field(ge=0, le=0xFFFF)]
U24 = Annotated[int, Field(ge=0, le=0xFFFFFF)]
U32 = Annotated[int, Field(ge=0, le=0xFFFFFFFF)]
U64 = Annotated[int, Field(ge=0, le=0xFFFFFFFFFFFFFFFF)]
#: A guest-physical or device-physical address: a number, or a template
#: (``${step.field}``) resolved when the step runs.
Address = U64 | Annotated[str, Field(pattern=r"^\$\{[^}]+\}$")]
EventLog = Literal["informational", "warning", "failure", "fatal"]
#: QEMU's names for the CXL RAS capability's error bits (qapi/cxl.json).
CorrectableType = Literal["cache-data-ecc", "mem-data-ecc", "crc-threshold", "retry-threshold",
                          "cache-poison-received", "mem-poison-received", "physical"]
UncorrectableType = Literal[
    "cache-data-parity", "cache-address-parity", "cache-be-parity", "cache-data-ecc",
    "mem-data-parity", "mem-address-parity", "mem-be-parity", "mem-data-ecc",
    "reinit-threshold", "rsvd-encoding", "poison-received", "receiver-overflow", "internal",
    "cxl-ide-tx", "cxl-ide-rx"]


#: A type-3 device of the topology: its id, or a template (``${cxl_device}``).
DeviceRef = Ident | Annotated[str, Field(pattern=r"^\$\{[^}]+\}$")]


class TargetSpec(_Strict):
    """Where a fault lands: a device and a device physical address, or the
    guest page whose physical address an earlier step printed."""

    device: DeviceRef | None = None
    #: Device physical address, 64-byte aligned.
    dpa: Address | None = None
    #: ``STEP.path``: an earlier step's field holding a guest physical address
    #: (``wl.pages[0].pa``); the rig decodes it to device and DPA through the
    #: region's interleave.
    page_of: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*[.\[].+$")] | None = None
    #: With page_of: bytes into that page (64-byte aligned).
    offset: Annotated[int, Field(ge=0, lt=1 << 21, multiple_of=64)] = 0

    @model_validator(mode="after")
    def _one_target(self) -> TargetSpec:
        if self.page_of is not None:
            if self.device is not None or self.dpa is not None:
                raise ValueError("name the target either by page_of or by device and dpa, "
                                 "not both")
        elif self.device is None or self.dpa is None:
            raise ValueError("a target needs device and dpa, or page_of")
        if isinstance(self.dpa, int) and self.dpa % 64:
            raise ValueError(f"dpa {self.dpa:#x} is not 64-byte aligned")
        return self


class PoisonSpec(TargetSpec):
    """Poison a range of device memory (QMP cxl-inject-poison)."""

    length: Annotated[int, Field(gt=0, le=1 << 30, multiple_of=64)] = 64
    #: Then have the kernel read the device's poison list (trigger_poison_list):
    #: one cxl_poison trace record per poisoned range.
    read_list: bool = True


class _EventCommon(_Strict):
    log: EventLog = "informational"
    #: Event record flags (CXL r3.0 Table 8-42), the header's low byte.
    flags: U8 = 0


class _MediaEvent(TargetSpec, _EventCommon):
    """What General Media and DRAM event records share (CXL r3.0 Tables 8-43, 8-44)."""

    #: The DPA's flag bits (1:0: volatile, not repairable).
    dpa_flags: Annotated[int, Field(ge=0, le=3)] = 0
    descriptor: U8 = 0
    type: U8 = 0
    transaction_type: U8 = 0
    channel: U8 | None = None
    rank: U8 | None = None


class GeneralMediaSpec(_MediaEvent):
    """A General Media Event record (CXL r3.0 8.2.9.2.1.1)."""

    #: The record's "device" field: a bit mask of the devices in the rank.
    device_mask: U24 | None = None
    #: Up to 15 characters (the record holds 16 bytes, NUL-terminated by QEMU).
    component_id: Annotated[str, Field(min_length=1, max_length=15,
                                       pattern=r"^[ -~]+$")] | None = None


class DramSpec(_MediaEvent):
    """A DRAM Event record (CXL r3.0 8.2.9.2.1.2)."""

    nibble_mask: U24 | None = None
    bank_group: U8 | None = None
    bank: U8 | None = None
    row: U24 | None = None
    column: U16 | None = None
    correction_mask: Annotated[list[U64], Field(min_length=1, max_length=4)] | None = None


class MemoryModuleSpec(_EventCommon):
    """A Memory Module Event record with a copy of the device's health (8.2.9.2.1.3)."""

    device: DeviceRef
    type: U8 = 0
    health_status: U8 = 0
    media_status: U8 = 0
    additional_status: U8 = 0
    life_used: Annotated[int, Field(ge=0, le=100)] = 0
    temperature: Annotated[int, Field(ge=-32768, le=32767)] = 0
    dirty_shutdown_count: U32 = 0
    corrected_volatile_error_count: U32 = 0
    corrected_persistent_error_count: U32 = 0


class EventSpec(_Strict):
    general_media: GeneralMediaSpec | None = None
    dram: DramSpec | None = None
    memory_module: MemoryModuleSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> EventSpec:
        _exactly_one(self, EVENT_KINDS, "an event is")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in EVENT_KINDS if getattr(self, k) is not None)


EVENT_KINDS = ("general_media", "dram", "memory_module")


class CorrectableSpec(_Strict):
    """A correctable CXL error, reported through AER (cxl-inject-correctable-error)."""

    device: DeviceRef
    type: CorrectableType


class UncorrectableError(_Strict):
    type: UncorrectableType
    #: The header log: up to 32 dwords.
    header: Annotated[list[U32], Field(max_length=32)] = []


class UncorrectableSpec(_Strict):
    """Uncorrectable CXL errors, the first one's header logged, reported through AER."""

    device: DeviceRef
    errors: Annotated[list[UncorrectableError], Field(min_length=1, max_length=16)]


class InjectSpec(_Strict):
    """A fault injected into the machine; the guest's reaction is the step's data."""

    poison: PoisonSpec | None = None
    correctable: CorrectableSpec | None = None
    uncorrectable: UncorrectableSpec | None = None
    event: EventSpec | None = None
    #: Seconds to wait for the guest's trace records (they come from an
    #: interrupt thread); the step ends earlier once they are all there.
    settle: Annotated[float, Field(gt=0, le=600)] = 10.0
    #: Compare every injected field with the guest's record of it, one check
    #: a field (for poison, event and error records).
    roundtrip: bool = True
    #: QEMU refusing the command is an outcome to record, not a failed run.
    may_refuse: bool = False
    #: Also wait (within settle) until the kernel log shows this text: what
    #: the kernel does after logging the record (an AER recovery) is then done.
    wait_log: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _one(self) -> InjectSpec:
        _exactly_one(self, FAULT_KINDS, "inject takes")
        return self

    @property
    def kind(self) -> str:
        """poison, correctable, uncorrectable, or the event's kind."""
        if self.event is not None:
            return self.event.kind
        return next(k for k in FAULT_KINDS if getattr(self, k) is not None)

    @property
    def spec(self) -> _Strict:
        """The one fault's own spec."""
        if self.event is not None:
            found: _Strict | None = getattr(self.event, self.event.kind)
        else:
            found = getattr(self, self.kind)
        assert found is not None
        return found


FAULT_KINDS = ("poison", "correctable", "uncorrectable", "event")


class ExtentSpec(_Strict):
    """A dynamic-capacity extent, from the start of its DC region."""

    offset: Size
    length: Annotated[Size, Field(gt=0)]


class _DcdCommon(_Strict):
    #: A device with dynamic_capacity in the topology.
    device: DeviceRef
    #: The DC region (0-7) the extents are in.
    region: Annotated[int, Field(ge=0, le=7)] = 0
    extents: Annotated[list[ExtentSpec], Field(min_length=1, max_length=64)]
    host_id: U16 = 0
    tag: Annotated[str, Field(min_length=1, max_length=36)] | None = None


class DcdAddSpec(_DcdCommon):
    """Offer capacity to the host (CXL r3.1 7.6.7.6.5, QMP cxl-add-dynamic-capacity)."""

    policy: Literal["free", "contiguous", "prescriptive", "enable-shared-access"] = \
        "prescriptive"


class DcdReleaseSpec(_DcdCommon):
    """Take capacity back (7.6.7.6.6, cxl-release-dynamic-capacity)."""

    policy: Literal["tag-based", "prescriptive"] = "prescriptive"
    #: The host loses the capacity at once, without releasing it itself.
    forced: bool = False
    sanitize: bool = False


class DcdSpec(_Strict):
    """Dynamic capacity added to or released from a device; what the guest made of it."""

    add: DcdAddSpec | None = None
    release: DcdReleaseSpec | None = None
    #: Seconds the guest is given to react (trace records, kernel log, sysfs).
    settle: Annotated[float, Field(gt=0, le=600)] = 3.0
    #: QEMU refusing the command is an outcome to record, not a failed run.
    may_refuse: bool = False

    @model_validator(mode="after")
    def _one(self) -> DcdSpec:
        _exactly_one(self, ("add", "release"), "dcd takes")
        return self

    @property
    def kind(self) -> str:
        return "add" if self.add is not None else "release"

    @property
    def spec(self) -> DcdAddSpec | DcdReleaseSpec:
        found = self.add if self.add is not None else self.release
        assert found is not None
        return found


class HotplugSpec(_Strict):
    """A type-3 device added to its empty port, or removed from it (device_add/_del)."""

    #: A device the topology declares with ``present: false`` (or one removed earlier).
    add: DeviceRef | None = None
    remove: DeviceRef | None = None
    #: With add: then create and online every region whose devices are now all present.
    regions: bool = True
    #: Seconds the guest is given to see the device come or go.
    settle: Annotated[float, Field(gt=0, le=600)] = 30.0
    #: QEMU refusing the command is an outcome to record, not a failed run.
    may_refuse: bool = False

    @model_validator(mode="after")
    def _one(self) -> HotplugSpec:
        _exactly_one(self, ("add", "remove"), "hotplug takes")
        return self


class TieringSpec(_Strict):
    """One tiering policy against a workload whose hot set starts on the CXL node.

    The workload (``hotcold``) places a hot and a cold set on ``source_node``,
    drops their binding, and runs ``intervals`` phases of ``seconds`` each; the
    plugin closes a phase after each, so every interval has its ground truth:
    which of the workload's pages were accessed how often, on which node.
    """

    policy: Literal["none", "move_phys_pages", "move_pages", "numa_balancing", "damon"]
    hot_pages: Annotated[int, Field(ge=1, le=4096)] = 32
    cold_pages: Annotated[int, Field(ge=1, le=16384)] = 96
    #: Hot passes per iteration; the cold set gets one pass every ``cold_ms``
    #: milliseconds (rarely enough that "touched lately" is not "hot").
    ratio: Annotated[int, Field(ge=1, le=1000)] = 8
    cold_ms: Annotated[int, Field(ge=0, le=600000)] = 2000
    intervals: Annotated[int, Field(ge=2, le=32)] = 10
    seconds: Annotated[int, Field(ge=1, le=60)] = 2
    #: The hot set moves: from this interval on, the cold set is the hot one.
    swap_at: Annotated[int, Field(ge=2, le=32)] | None = None
    source_node: int | str = "${cxl_node}"
    target_node: int | str = 0
    #: User-space policies: at most this many pages promoted after an interval,
    #: the most accessed pages of the source node that had at least
    #: ``min_accesses`` in it (the plugin stands in for a device's hotness unit).
    top: Annotated[int, Field(ge=1, le=4096)] = 16
    min_accesses: Annotated[int, Field(ge=1)] = 4096
    #: DAMON: the fewest of the 20 samples of an aggregation a region must be
    #: seen accessed in to be promoted.
    damon_min_accesses: Annotated[int, Field(ge=1, le=20)] = 4

    @model_validator(mode="after")
    def _swap_inside(self) -> TieringSpec:
        if self.swap_at is not None and self.swap_at > self.intervals:
            raise ValueError(f"swap_at {self.swap_at} is after the last interval "
                             f"({self.intervals})")
        return self


#: What a step does: exactly one of these.
ACTIONS = ("run", "kselftest", "mark", "qmp", "promote", "inject", "dcd", "hotplug", "tiering")


class StepSpec(_Strict):
    id: Ident | None = None
    run: str | None = None
    #: One of the kernel's own selftests (``mm/migration``, as listed in
    #: guest/kernel/selftests), built from the kernel's source tree; each TAP
    #: case it reports is a check of its own.
    kselftest: str | None = None
    #: With kselftest: arguments for the harness; ``-T TEST`` leaves out the
    #: test named TEST (the bare name, without its fixture prefix).
    args: str = ""
    mark: str | None = None
    qmp: QmpSpec | None = None
    promote: PromoteSpec | None = None
    #: A fault: poison, an event record or an error, into a device.
    inject: InjectSpec | None = None
    #: Dynamic capacity added or released.
    dcd: DcdSpec | None = None
    #: A device added to or removed from the running machine.
    hotplug: HotplugSpec | None = None
    #: A tiering policy measured against the plugin's ground truth.
    tiering: TieringSpec | None = None
    user: Literal["root", "user"] = "root"
    #: Parse the last line of stdout that is a JSON object into the step's data.
    json_: bool = Field(default=False, alias="json")
    #: A non-zero status means the scenario could not run (exit 2), not a verdict.
    check: bool = False
    timeout: Annotated[float, Field(gt=0)] | None = None
    measure: MeasureSpec | None = None
    #: With mark: also the DRAM share of the accesses to the pages this
    #: earlier step's JSON lists (a workload's own pages).
    workload: str | None = None
    #: Repeat the step for each value, with ${VAR} substituted.
    foreach: dict[str, list[int | str]] | None = None
    variants: list[str] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> StepSpec:
        _exactly_one(self, ACTIONS, "a step needs")
        if self.foreach is not None and len(self.foreach) != 1:
            raise ValueError("foreach takes one variable: {NAME: [values...]}")
        return self


EXPECT_OPS = ("equals", "not_equals", "one_of", "contains", "not_contains", "greater", "less")


class ExpectSpec(_Strict):
    step: str
    #: "status", "stdout", "stderr", or a path into the step's data
    #: (``first_call.status[0]``); for promote steps, plugin figures.
    field: str = "status"
    equals: Any = None
    not_equals: Any = None
    one_of: list[Any] | None = None
    contains: str | None = None
    #: The field, as text, does not contain this.
    not_contains: str | None = None
    greater: int | float | str | None = None
    less: int | float | str | None = None
    why: str = ""

    @model_validator(mode="after")
    def _one_op(self) -> ExpectSpec:
        ops = [k for k in EXPECT_OPS if k in self.model_fields_set]
        if len(ops) != 1:
            raise ValueError(f"an expectation needs exactly one of {', '.join(EXPECT_OPS)}")
        return self

    @property
    def op(self) -> str:
        return next(k for k in EXPECT_OPS if k in self.model_fields_set)

    @property
    def expected(self) -> Any:
        return getattr(self, self.op)


class PluginSpec(_Strict):
    sample: Annotated[int, Field(ge=1)] = 1
    interval: Annotated[int, Field(ge=0)] = 0
    interval_unit: Literal["insn", "ns"] = "ns"
    #: Make nodes slower than the fastest one slow for the guest's own clock
    #: (the plugin's delay=on: each access adds its modelled extra latency).
    delay: bool = False


class RequiresSpec(_Strict):
    """What a topology must offer for the scenario to mean anything on it.

    Numbers are minimums; a scenario on a topology that lacks any of them is
    a ``skip`` with the reason, never a ``fail``.
    """

    #: CXL ram regions onlined as system RAM (a NUMA node of their own).
    ram_regions: Annotated[int, Field(ge=0)] = 0
    #: DRAM NUMA nodes (with CPUs or not).
    dram_nodes: Annotated[int, Field(ge=0)] = 0
    #: Guest CPUs.
    cpus: Annotated[int, Field(ge=0)] = 0
    #: A region left as a device-dax instance (true), or none may be (false).
    devdax: bool | None = None
    #: Persistent (pmem) regions.
    pmem_regions: Annotated[int, Field(ge=0)] = 0
    #: Dynamic-capacity devices.
    dc_devices: Annotated[int, Field(ge=0)] = 0
    #: Devices absent at boot (``present: false``), for hotplug steps to add.
    absent_devices: Annotated[int, Field(ge=0)] = 0
    #: The TCG plugin: a topology that insists on KVM cannot give it.
    plugin: bool = False

    def unmet(self, topo: Topology) -> list[str]:
        """What ``topo`` lacks, each as a short phrase; empty when it has it all."""
        have = topology_facts(topo)
        lacks = []
        for key, what in (("ram_regions", "ram region(s) onlined as a node"),
                          ("dram_nodes", "DRAM node(s)"), ("cpus", "CPU(s)"),
                          ("pmem_regions", "pmem region(s)"),
                          ("dc_devices", "dynamic-capacity device(s)"),
                          ("absent_devices", "device(s) absent at boot for hotplug")):
            want = getattr(self, key)
            if have[key] < want:
                lacks.append(f"needs {want} {what}, has {have[key]}")
        if self.devdax is True and not have["devdax"]:
            lacks.append("needs a device-dax region, has none")
        if self.devdax is False and have["devdax"]:
            lacks.append("needs no device-dax region, has one")
        if self.plugin and not have["plugin"]:
            lacks.append("needs the TCG plugin, the topology asks for KVM")
        return lacks


def topology_facts(topo: Topology) -> dict[str, int]:
    """What a topology offers, in the terms of :class:`RequiresSpec`."""
    booted = topo.booted_regions
    ram = [r for r in booted if r.type == "ram" and r.online != "devdax"]
    return {
        "ram_regions": len(ram),
        "dram_nodes": len(topo.nodes),
        "cpus": topo.cpus,
        "devdax": int(any(r.online == "devdax" for r in booted)),
        "pmem_regions": sum(1 for r in booted if r.type == "pmem"),
        "absent_devices": sum(1 for d in topo.devices if not d.present),
        "dc_devices": sum(1 for d in topo.devices if d.dc_size),
        "plugin": int(topo.accel != "kvm"),
        "devices": len(topo.devices),
    }


class ScenarioSpec(_Strict):
    name: Ident
    title: str
    point: str
    reviewers: list[str] = []
    #: Free words a matrix can select scenarios by (``tag:NAME``).
    tags: list[Ident] = []
    #: The topology ``cxlrig run`` uses when none is given: a file next to the
    #: scenario (``NAME`` or ``NAME.yaml``) first, then a shipped one.
    topology: str = "default"
    requires: RequiresSpec = RequiresSpec()
    #: Boot any topology with at least this many vCPUs (the extra ones on its
    #: first DRAM node): migration.c skips every case with fewer than 4.
    cpus: Annotated[int, Field(ge=1, le=64)] | None = None
    #: Run commands on the CPUs of the first DRAM node, so that the pages a
    #: step touches first land there (``${dram_node}``) on topologies with
    #: CPUs on several nodes too; false leaves the scheduler free.
    on_dram_node: bool = True
    #: The shipped variants (guest/kernel/patches/*) the scenario is written for.
    variants: Annotated[list[str], Field(min_length=1)] = ["v1", "v2"]
    plugin: PluginSpec | None = None
    append: str = ""
    predicted: dict[str, str] = {}
    #: Host files put into the guest, ``HOST[:GUEST]`` (HOST relative to the
    #: scenario file; GUEST default /opt/NAME). After loading, HOST is absolute.
    files: list[str] = []
    steps: Annotated[list[StepSpec], Field(min_length=1)]
    expect: dict[str, list[ExpectSpec]] = {}

    @property
    def kselftests(self) -> tuple[str, ...]:
        """The kernel selftests the steps run."""
        return tuple(st.kselftest for st in self.steps if st.kselftest is not None)

    def machine(self, topo: Topology) -> Topology:
        """``topo`` as this scenario boots it: with its ``cpus`` at least."""
        return topo if self.cpus is None else topo.with_cpus(self.cpus)

    def unmet(self, topo: Topology) -> list[str]:
        """Why this scenario cannot run on ``topo`` (empty: it can)."""
        topo = self.machine(topo)
        needs = self.requires
        if self.plugin is not None and not needs.plugin:
            needs = needs.model_copy(update={"plugin": True})
        return needs.unmet(topo)


class ScenarioError(CheckFailed):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_scenario(path: str | FsPath) -> tuple[ScenarioSpec, Located]:
    """Read and validate a scenario file, or raise ScenarioError."""
    try:
        doc = read_located(path)
    except YamlLoadError as exc:
        raise ScenarioError(exc.problems) from None
    if not isinstance(doc.data, dict):
        raise ScenarioError([doc.problem((), "a scenario must be a mapping")])
    try:
        spec = ScenarioSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise ScenarioError(shape_problems(doc, exc, ScenarioSpec)) from None
    problems = _check_refs(doc, spec)
    spec, found = _resolve_paths(doc, spec, FsPath(path).resolve().parent)
    problems += found
    if problems:
        raise ScenarioError(problems)
    return spec, doc


def _resolve_paths(doc: Located, spec: ScenarioSpec,
                   here: FsPath) -> tuple[ScenarioSpec, list[Problem]]:
    """Files and the topology named relative to the scenario file, made absolute."""
    from cxlrig.images.overlay import resolve_all
    from cxlrig.paths import DATA_ROOT

    files, bad = resolve_all(spec.files, here)
    problems = [doc.problem(("files", i), why) for i, why in bad]
    topology = spec.topology
    name = topology if topology.endswith(".yaml") else f"{topology}.yaml"
    if (here / name).is_file():
        topology = str(here / name)
    elif not (DATA_ROOT / "topologies" / name).is_file() and not FsPath(topology).is_file():
        problems.append(doc.problem(("topology",), f"'{topology}' is neither next to the "
                                    f"scenario ({here / name}) nor a shipped topology"))
    return spec.model_copy(update={"files": files, "topology": topology}), problems


def _fault_path(st: StepSpec) -> tuple[str, ...]:
    """The key path from ``inject`` to the fault's own spec."""
    assert st.inject is not None
    kind = st.inject.kind
    return ("event", kind) if st.inject.event is not None else (kind,)


def _page_of(st: StepSpec) -> str | None:
    if st.inject is None:
        return None
    target = st.inject.spec
    return target.page_of if isinstance(target, TargetSpec) else None


def _check_refs(doc: Located, spec: ScenarioSpec) -> list[Problem]:
    problems = []
    ids: dict[str, int] = {}
    marks: set[str] = set()
    for i, st in enumerate(spec.steps):
        if st.id is not None:
            if st.id in ids:
                problems.append(doc.problem(("steps", i, "id"), f"duplicate step id '{st.id}'"))
            ids[st.id] = i
            # Each repetition of a foreach step is also ID_VALUE.
            for values in (st.foreach or {}).values():
                for v in values:
                    ids[f"{st.id}_{v}"] = i
        if st.workload is not None and st.workload not in ids:
            problems.append(doc.problem(("steps", i, "workload"),
                                        f"no earlier step '{st.workload}'"))
        page_of = _page_of(st)
        if page_of is not None and page_of.split(".")[0].split("[")[0] not in ids:
            problems.append(doc.problem(("steps", i, "inject", *_fault_path(st), "page_of"),
                                        f"no earlier step '{page_of.split('.')[0]}'"))
        if st.mark is not None:
            marks.add(st.mark)
        if (st.mark is not None or st.promote is not None or st.tiering is not None) \
                and spec.plugin is None:
            what = "mark" if st.mark is not None else \
                "promote" if st.promote is not None else "tiering"
            problems.append(doc.problem(("steps", i, what), f"a '{what}' step needs the "
                                        "plugin: add 'plugin: {}' to the scenario"))
        if st.promote is not None:
            if st.promote.via == "virt" and st.promote.pages_from is None:
                problems.append(doc.problem(("steps", i, "promote"),
                                            "via: virt needs pages_from: a step listing the "
                                            "pages"))
            if st.promote.pages_from is not None and st.promote.pages_from not in ids:
                problems.append(doc.problem(("steps", i, "promote", "pages_from"),
                                            f"no earlier step '{st.promote.pages_from}'"))
            # A phase named through a template is only known at run time.
            phase = st.promote.phase
            if "${" not in phase and phase not in marks and not any("${" in m for m in marks):
                known = ", ".join(sorted(marks)) or "no mark step comes before it"
                problems.append(doc.problem(("steps", i, "promote", "phase"),
                                            f"no earlier mark '{phase}' (marked: {known})"))
    listed: tuple[str, ...] | None = None
    for i, st in enumerate(spec.steps):
        if st.kselftest is not None:
            if listed is None:
                from cxlrig.images.selftests import LIST_FILE, selftest_names

                listed = selftest_names()
            if st.kselftest not in listed:
                problems.append(doc.problem(("steps", i, "kselftest"), f"'{st.kselftest}' is "
                                            f"not among the selftests the rig builds "
                                            f"({', '.join(listed)}; the list: {LIST_FILE})"))
    for key, checks in spec.expect.items():
        for j, ex in enumerate(checks):
            if ex.step not in ids:
                known = ", ".join(ids) or "no step has an id"
                problems.append(doc.problem(("expect", key, j, "step"),
                                            f"no step '{ex.step}' (known: {known})"))
    for j, name in enumerate(spec.variants):
        if name not in VARIANTS:
            problems.append(doc.problem(("variants", j), f"'{name}' is not a variant "
                                        f"({', '.join(VARIANTS)})"))
    for i, st in enumerate(spec.steps):
        for j, name in enumerate(st.variants or []):
            if name not in spec.variants:
                problems.append(doc.problem(("steps", i, "variants", j), f"'{name}' is not "
                                            f"among this scenario's variants "
                                            f"({', '.join(spec.variants)})"))
    for key in spec.expect:
        if key not in (*VARIANTS, "all"):
            problems.append(doc.problem(("expect", key), f"'{key}' is not a variant "
                                        f"({', '.join(VARIANTS)}) or 'all'"))
        elif key != "all" and key not in spec.variants:
            problems.append(doc.problem(("expect", key), f"'{key}' is not among this "
                                        f"scenario's variants ({', '.join(spec.variants)})"))
    return problems
