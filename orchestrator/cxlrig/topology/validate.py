"""Load a topology file: parse with marks, check shape, check meaning, resolve.

Every problem found is reported with its file, line, column and key path,
all of them at once. Shape problems (types, unknown keys) are found first;
the meaning checks run when the shape is right, since they need it.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from cxlrig.errors import CheckFailed
from cxlrig.topology import model as m
from cxlrig.topology import schema as s
from cxlrig.topology.yamlmarks import (
    Located,
    Path,
    Problem,
    YamlLoadError,
    load_located,
    read_located,
)

#: Where host bridge bus numbers start when the file does not choose them
#: (as in QEMU's CXL documentation; the main PCIe hierarchy stays below).
FIRST_BUS = 12


class TopologyError(CheckFailed):
    """A topology file is not valid; ``problems`` says every way it is not."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        ordered = sorted(problems, key=lambda p: (p.file, p.line, p.col))
        super().__init__("\n".join(str(p) for p in ordered))
        self.problems = ordered


def load(path: str | FsPath) -> m.Topology:
    """Read, validate and resolve a topology file, or raise TopologyError."""
    try:
        doc = read_located(path)
    except YamlLoadError as exc:
        raise TopologyError(exc.problems) from None
    return _check(doc)


def loads(text: str, name: str = "<string>") -> m.Topology:
    try:
        doc = load_located(text, name)
    except YamlLoadError as exc:
        raise TopologyError(exc.problems) from None
    return _check(doc)


def _check(doc: Located) -> m.Topology:
    if not isinstance(doc.data, dict):
        raise TopologyError([doc.problem((), "the file must be a mapping with name, machine, cxl")])
    try:
        spec = s.TopologySpec.model_validate(doc.data)
    except ValidationError as exc:
        raise TopologyError(shape_problems(doc, exc, s.TopologySpec)) from None
    return _Checker(doc, spec).run()


_BRANCH = re.compile(r"^(?:(?:constrained-)?(?:str|int|float|bool|bytes)|.*\[.*\])$")


def shape_problems(doc: Located, exc: ValidationError,
                   root: type[BaseModel]) -> list[Problem]:
    """Pydantic's errors as located problems, in the house wording."""
    problems = []
    seen = set()
    #: Where a value may also be a template (``${...}``): a union's other branch.
    templates: set[Path] = set()
    for err in exc.errors():
        loc: Path = tuple(p for p in err["loc"] if isinstance(p, str | int))
        # Pydantic names the branch of an Optional or a union it tried
        # ("function-after[...]", "constrained-str"); the user never wrote it.
        loc = tuple(p for p in loc if not isinstance(p, str) or not _BRANCH.match(p))
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(root, loc[:-1])
            allowed = ", ".join(f.alias or name for name, f in parent.model_fields.items()) \
                if parent else ""
            msg = f"unknown key (allowed here: {allowed})" if allowed else "unknown key"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "value_error":
            msg = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        elif kind == "string_pattern_mismatch" and \
                str(err.get("ctx", {}).get("pattern", "")).startswith("^\\$"):
            templates.add(loc)  # said once, with the other branch's message
            continue
        elif kind == "string_pattern_mismatch":
            msg = (f"{err['input']!r} is not a valid name (a letter, then letters, digits, "
                   "'-' or '_', at most 40)")
        elif kind in ("int_type", "int_parsing", "int_from_float"):
            msg = f"expected a whole number, got {_show(err['input'])}"
        elif kind in ("string_type",):
            msg = f"expected a string, got {_show(err['input'])}"
        elif kind in ("list_type",):
            msg = f"expected a list, got {_show(err['input'])}"
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            msg = f"expected a mapping, got {_show(err['input'])}"
        else:
            msg = err["msg"]
            if msg.startswith("Input should be"):
                msg = "must be" + msg[len("Input should be"):]
        key = (loc, msg)
        if key in seen:
            continue
        seen.add(key)
        problems.append((loc, msg))
    said = {loc for loc, _ in problems}
    problems += [(loc, "is not a template") for loc in templates - said]
    located = [doc.problem(loc, msg + (", nor a template (${step.field} or ${variable})"
                                       if loc in templates and msg != "is not a template"
                                       else " (${step.field} or ${variable})"
                                       if loc in templates else ""))
               for loc, msg in problems]
    return sorted(located, key=lambda p: (p.line, p.col, p.message))


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    return f"{type(value).__name__} {value!r}"


def _model_at(root: type[BaseModel], loc: Path) -> type[BaseModel] | None:
    """The schema model that sits at ``loc`` (for listing allowed keys)."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _inner_model(field.annotation)
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


class _Checker:
    """The meaning checks. Collects problems; resolves when there are none."""

    def __init__(self, doc: Located, spec: s.TopologySpec) -> None:
        self.doc = doc
        self.spec = spec
        self.problems: list[Problem] = []

    def bad(self, path: Path, msg: str) -> None:
        self.problems.append(self.doc.problem(path, msg))

    def run(self) -> m.Topology:
        nodes = self.check_machine()
        cx = self.spec.cxl
        self.check_ids()
        hb_ids = {h.id for h in cx.host_bridges}
        rp_ids = {r.id for r in cx.root_ports}
        sw_ids = {w.id for w in cx.switches}
        dev_ids = {d.id for d in cx.devices}
        win_ids = {w.id for w in cx.windows}

        # Root ports hang off host bridges; port numbers unique per bridge.
        rp_children: dict[str, list[Path]] = defaultdict(list)
        ports_by_hb: dict[str, list[tuple[int, Path]]] = defaultdict(list)
        for i, rp in enumerate(cx.root_ports):
            p: Path = ("cxl", "root_ports", i)
            if rp.host_bridge not in hb_ids:
                self.bad((*p, "host_bridge"), self._dangling(rp.host_bridge, "host bridge", hb_ids))
            if rp.port is not None:
                ports_by_hb[rp.host_bridge].append((rp.port, (*p, "port")))
        for hb, ports in ports_by_hb.items():
            counts = Counter(n for n, _ in ports)
            for n, path in ports:
                if counts[n] > 1:
                    self.bad(path, f"port {n} is used by more than one root port of {hb}")

        # Switches: one level, each on a root port.
        for i, sw in enumerate(cx.switches):
            p = ("cxl", "switches", i)
            if sw.root_port in sw_ids:
                self.bad((*p, "root_port"), f"'{sw.root_port}' is a switch: QEMU supports only "
                         "one level of switches (a switch must sit on a root port)")
            elif sw.root_port not in rp_ids:
                self.bad((*p, "root_port"), self._dangling(sw.root_port, "root port", rp_ids))
            else:
                rp_children[sw.root_port].append(p)

        # Devices on root ports or switch downstream ports.
        used_ports: dict[str, list[tuple[int | None, Path]]] = defaultdict(list)
        for i, dev in enumerate(cx.devices):
            p = ("cxl", "devices", i)
            self.check_device(dev, p)
            if dev.attach in rp_ids:
                if dev.port is not None:
                    self.bad((*p, "port"), "'port' chooses a switch downstream port; "
                             f"'{dev.attach}' is a root port")
                rp_children[dev.attach].append(p)
            elif dev.attach in sw_ids:
                used_ports[dev.attach].append((dev.port, p))
            else:
                self.bad((*p, "attach"), self._dangling(dev.attach, "root port or switch",
                                                        rp_ids | sw_ids))
        for rp_id, children in rp_children.items():
            if len(children) > 1:
                for child in children[1:]:
                    self.bad(child, f"root port '{rp_id}' already has a device or switch "
                             f"({self._id_at(children[0])}); a root port takes one")
        sw_by_id = {w.id: w for w in cx.switches}
        for sw_id, devs in used_ports.items():
            sw = sw_by_id[sw_id]
            if len(devs) > sw.ports:
                for _, path in devs[sw.ports:]:
                    self.bad((*path, "attach"), f"switch '{sw_id}' has "
                             f"{_count(sw.ports, 'downstream port')} and {len(devs)} devices: "
                             "more devices than ports")
            counts = Counter(n for n, _ in devs if n is not None)
            for port, path in devs:
                if port is None:
                    continue
                n = port
                if n >= sw.ports:
                    self.bad((*path, "port"), f"switch '{sw_id}' has downstream ports "
                             f"0..{sw.ports - 1}, not {n}")
                elif counts[n] > 1:
                    self.bad((*path, "port"), f"downstream port {n} of '{sw_id}' is taken "
                             "by more than one device")

        serials = Counter(d.serial for d in cx.devices if d.serial is not None)
        for i, dev in enumerate(cx.devices):
            if dev.serial is not None and serials[dev.serial] > 1:
                self.bad(("cxl", "devices", i, "serial"), f"serial {dev.serial} is not unique")

        for i, w in enumerate(cx.windows):
            self.check_window(w, ("cxl", "windows", i), hb_ids)

        if self.problems:
            raise TopologyError(self.problems)
        # From here on every reference resolves: check the resolved tree.
        topo = self.resolve(nodes)
        self.check_buses(list(topo.host_bridges))
        self.check_regions(topo, dev_ids, win_ids)
        if self.problems:
            raise TopologyError(self.problems)
        return topo

    # -- machine -------------------------------------------------------------

    def check_machine(self) -> list[m.DramNode]:
        mach = self.spec.machine
        nodes: list[m.DramNode] = []
        owner: dict[int, int] = {}
        for i, node in enumerate(mach.nodes):
            p: Path = ("machine", "nodes", i)
            if node.memory < m.MEMORY_BLOCK or node.memory % m.MEMORY_BLOCK:
                self.bad((*p, "memory"), f"{s.format_size(node.memory)} is not a positive multiple "
                         "of 128M (the x86_64 memory block size; Linux trims the rest)")
            cpus = node.cpus
            if cpus is None:
                cpus = list(range(mach.cpus)) if len(mach.nodes) == 1 else []
            for j, cpu in enumerate(cpus):
                if cpu >= mach.cpus:
                    self.bad((*p, "cpus", j), f"CPU {cpu} does not exist: machine.cpus is "
                             f"{mach.cpus} (CPUs 0..{mach.cpus - 1})")
                elif cpu in owner:
                    self.bad((*p, "cpus", j), f"CPU {cpu} is already on node {owner[cpu]}")
                else:
                    owner[cpu] = i
            nodes.append(m.DramNode(i, node.memory, tuple(cpus), _perf(node.performance)))
        if len(mach.nodes) > 1:
            missing = [c for c in range(mach.cpus) if c not in owner]
            if missing:
                self.bad(("machine", "nodes"), "with several nodes every CPU needs a node; "
                         f"unplaced: {', '.join(map(str, missing))}")
        total = sum(n.memory for n in mach.nodes)
        if mach.maxmem is not None and total > mach.maxmem:
            self.bad(("machine", "maxmem"), f"the nodes have {s.format_size(total)} of memory, "
                     f"above maxmem {s.format_size(mach.maxmem)}")
        return nodes

    def check_ids(self) -> None:
        """Ids are QEMU ids: unique across every kind, derived ones included."""
        cx = self.spec.cxl
        where: dict[str, list[Path]] = defaultdict(list)
        for group in ("host_bridges", "root_ports", "switches", "devices", "windows", "regions"):
            for i, item in enumerate(getattr(cx, group)):
                where[item.id].append(("cxl", group, i, "id"))
        for ident, paths in where.items():
            for path in paths[1:]:
                first = paths[0]
                self.bad(path, f"duplicate id '{ident}' (first used at "
                         f"line {self.doc.mark(first).line})")

    # -- devices and windows ---------------------------------------------------

    def check_device(self, dev: s.DeviceSpec, p: Path) -> None:
        for key in ("volatile", "persistent"):
            size = getattr(dev, key)
            if size % m.CXL_CAPACITY_UNIT:
                self.bad((*p, key), f"{s.format_size(size)} is not a multiple of 256M "
                         "(a CXL device reports capacity in 256M units: Linux would see less)")
        dc = dev.dynamic_capacity
        if dc is not None and (dc.size == 0 or dc.size % (dc.regions * m.CXL_CAPACITY_UNIT)):
            self.bad((*p, "dynamic_capacity", "size"), f"{s.format_size(dc.size)} must be a "
                     f"positive multiple of {dc.regions} x 256M ({dc.regions} regions of "
                     "whole 256M units)")
        if dev.volatile == 0 and dev.persistent == 0 and dc is None:
            self.bad(p, f"device '{dev.id}' has no capacity: give volatile, persistent "
                     "or dynamic_capacity")
        if dev.lsa is not None:
            if dev.persistent == 0:
                self.bad((*p, "lsa"), "a label storage area only serves persistent capacity")
            elif dev.lsa < 4096 or dev.lsa % 4096:
                self.bad((*p, "lsa"), f"{s.format_size(dev.lsa)} is not a positive multiple of 4K")

    def check_window(self, w: s.WindowSpec, p: Path, hb_ids: set[str]) -> None:
        if w.size == 0 or w.size % m.CXL_CAPACITY_UNIT:
            self.bad((*p, "size"), f"{s.format_size(w.size)} is not a positive multiple of 256M "
                     "(QEMU refuses the window)")
        if w.granularity not in m.LEGAL_GRANULARITY:
            self.bad((*p, "granularity"), f"{s.format_size(w.granularity)} is not an interleave "
                     "granularity (256, 512, 1K, 2K, 4K, 8K or 16K)")
        if len(w.targets) not in m.LEGAL_WAYS:
            self.bad((*p, "targets"), f"{len(w.targets)} targets is not a legal interleave "
                     f"(ways: {', '.join(map(str, m.LEGAL_WAYS))})")
        for j, t in enumerate(w.targets):
            if t not in hb_ids:
                self.bad((*p, "targets", j), self._dangling(t, "host bridge", hb_ids))
        for t, n in Counter(w.targets).items():
            if n > 1 and t in hb_ids:
                self.bad((*p, "targets"), f"host bridge '{t}' is listed {n} times")

    # -- regions (on the resolved tree) -----------------------------------------

    def check_regions(self, topo: m.Topology, dev_ids: set[str], win_ids: set[str]) -> None:
        cx = self.spec.cxl
        used: dict[tuple[str, str], int] = defaultdict(int)
        in_window: dict[str, int] = defaultdict(int)
        # HDM decoders: a region takes one in every host bridge it spans, every
        # switch and every device on its path.
        decoders: dict[str, list[str]] = defaultdict(list)
        for i, r in enumerate(cx.regions):
            p: Path = ("cxl", "regions", i)
            ok = True
            if r.window not in win_ids:
                self.bad((*p, "window"), self._dangling(r.window, "window", win_ids))
                ok = False
            for j, d in enumerate(r.devices):
                if d not in dev_ids:
                    self.bad((*p, "devices", j), self._dangling(d, "device", dev_ids))
                    ok = False
            for d, n in Counter(r.devices).items():
                if n > 1:
                    self.bad((*p, "devices"), f"device '{d}' is listed {n} times")
                    ok = False
            ways = len(r.devices)
            if r.ways is not None and r.ways != ways:
                self.bad((*p, "ways"),
                         f"ways is {r.ways} but the region lists {_count(ways, 'device')}")
                ok = False
            if ways not in m.LEGAL_WAYS:
                self.bad((*p, "devices"), f"{ways} devices is not a legal interleave "
                         f"(ways: {', '.join(map(str, m.LEGAL_WAYS))})")
                ok = False
            if r.granularity is not None and r.granularity not in m.LEGAL_GRANULARITY:
                self.bad((*p, "granularity"), f"{s.format_size(r.granularity)} is not an "
                         "interleave granularity (256, 512, 1K, 2K, 4K, 8K or 16K)")
                ok = False
            if r.type == "pmem" and r.online is not None:
                self.bad((*p, "online"), "only ram regions are onlined; pmem regions "
                         "become pmem namespaces")
            if not ok:
                continue
            win = topo.window(r.window)
            devs = [topo.device(d) for d in r.devices]
            if ways % win.ways:
                self.bad((*p, "devices"), f"{ways} devices cannot interleave over window "
                         f"'{win.id}', which interleaves {win.ways} host bridges")
                continue
            for j, dev in enumerate(devs):
                if dev.host_bridge not in win.targets:
                    self.bad((*p, "devices", j), f"device '{dev.id}' is under host bridge "
                             f"'{dev.host_bridge}', which window '{win.id}' does not target "
                             f"({', '.join(win.targets)})")
                elif win.ways > 1 and dev.host_bridge != win.targets[j % win.ways]:
                    self.bad((*p, "devices", j), f"position {j} must be under host bridge "
                             f"'{win.targets[j % win.ways]}' (window '{win.id}' interleaves "
                             f"{', '.join(win.targets)} in that order), not '{dev.host_bridge}'")
            if win.ways > 1 and r.granularity is not None and r.granularity != win.granularity:
                self.bad((*p, "granularity"), f"window '{win.id}' interleaves host bridges at "
                         f"{s.format_size(win.granularity)}; Linux requires the region to use the "
                         "same granularity")
            cap = "volatile" if r.type == "ram" else "persistent"
            smallest = min(getattr(dv, cap) for dv in devs)
            for j, dv in enumerate(devs):
                if getattr(dv, cap) == 0:
                    self.bad((*p, "devices", j), f"device '{dv.id}' has no {cap} capacity "
                             f"for a {r.type} region")
            size = r.size if r.size is not None else smallest * ways
            unit = m.CXL_CAPACITY_UNIT * ways
            if r.size is not None and (size == 0 or size % unit):
                self.bad((*p, "size"), f"{s.format_size(size)} is not a positive multiple of "
                         f"{s.format_size(unit)} (256M per device, {ways} devices)")
                continue
            for dv in devs:
                used[(dv.id, cap)] += size // ways
                have = getattr(dv, cap)
                if used[(dv.id, cap)] > have and have:
                    self.bad((*p, "size"), f"needs {s.format_size(used[(dv.id, cap)])} of "
                             f"{cap} capacity on '{dv.id}', which has {s.format_size(have)}")
            for port in dict.fromkeys([*(d.host_bridge for d in devs),
                                       *(d.switch for d in devs if d.switch)]):
                decoders[port].append(r.id)
                limit = self._decoders(topo, port)
                if len(decoders[port]) > limit:
                    self.bad(p, f"'{port}' cannot decode region '{r.id}' as well as "
                             f"{', '.join(repr(x) for x in decoders[port][:-1])}: "
                             f"{self._decoder_reason(topo, port, limit)}")
            for dv in devs:
                decoders[dv.id].append(r.id)
                if len(decoders[dv.id]) > m.HDM_DECODERS:
                    self.bad(p, f"device '{dv.id}' already takes part in "
                             f"{m.HDM_DECODERS} regions (it has {m.HDM_DECODERS} HDM decoders)")
            in_window[win.id] += size
            if in_window[win.id] > win.size:
                self.bad((*p, "size"), f"regions in window '{win.id}' need "
                         f"{s.format_size(in_window[win.id])}, above its size "
                         f"{s.format_size(win.size)}")

    @staticmethod
    def _decoders(topo: m.Topology, port: str) -> int:
        """HDM decoders Linux finds in a host bridge or switch."""
        if any(hb.id == port for hb in topo.host_bridges):
            fanout = sum(1 for rp in topo.root_ports if rp.host_bridge == port)
        else:
            fanout = len(topo.switch(port).downstream)
        # With one downstream port Linux uses a single pass-through decoder.
        return 1 if fanout == 1 else m.HDM_DECODERS

    @staticmethod
    def _decoder_reason(topo: m.Topology, port: str, limit: int) -> str:
        if limit == 1:
            return ("with a single downstream port Linux gives it one pass-through decoder "
                    "(add a port to it, or move a region elsewhere)")
        return f"QEMU gives it {limit} HDM decoders"

    # -- resolution ------------------------------------------------------------

    def resolve(self, nodes: list[m.DramNode]) -> m.Topology:
        spec, cx = self.spec, self.spec.cxl
        slot = iter(range(256))
        rps_of: dict[str, list[s.RootPortSpec]] = defaultdict(list)
        for rp in cx.root_ports:
            rps_of[rp.host_bridge].append(rp)

        root_ports: list[m.RootPort] = []
        for hb_id, rps in rps_of.items():
            taken = {r.port for r in rps if r.port is not None}
            free = (n for n in range(256) if n not in taken)
            for rps_ in rps:
                port = rps_.port if rps_.port is not None else next(free)
                root_ports.append(m.RootPort(rps_.id, hb_id, port, 0, next(slot)))
        rp_by_id = {rp.id: rp for rp in root_ports}

        devs_on: dict[str, list[s.DeviceSpec]] = defaultdict(list)
        for d in cx.devices:
            devs_on[d.attach].append(d)
        switches: list[m.Switch] = []
        dsp_of_dev: dict[str, str] = {}
        for sws in cx.switches:
            dsps = tuple(m.DownstreamPort(f"{sws.id}.dsp{k}", sws.id, k, 0, next(slot))
                         for k in range(sws.ports))
            switches.append(m.Switch(sws.id, sws.root_port, dsps))
            taken = {d.port for d in devs_on[sws.id] if d.port is not None}
            free = (n for n in range(sws.ports) if n not in taken)
            for d in devs_on[sws.id]:
                k = d.port if d.port is not None else next(free, sws.ports - 1)
                dsp_of_dev[d.id] = dsps[min(k, sws.ports - 1)].id

        buses: dict[str, int] = defaultdict(int)
        for hb in cx.host_bridges:
            buses[hb.id] = 1
        for rpr in root_ports:
            buses[rpr.host_bridge] += 1
        for swr in switches:
            buses[rp_by_id[swr.root_port].host_bridge] += 1 + len(swr.downstream)
        host_bridges: list[m.HostBridge] = []
        next_bus = FIRST_BUS
        chosen = {hb.bus_nr for hb in cx.host_bridges if hb.bus_nr is not None}
        for hb in cx.host_bridges:
            if hb.bus_nr is not None:
                bus = hb.bus_nr
            else:
                while any(b in chosen for b in range(next_bus, next_bus + buses[hb.id] + 1)):
                    next_bus += 1
                bus = next_bus
            next_bus = max(next_bus, bus + buses[hb.id] + 1)
            host_bridges.append(m.HostBridge(hb.id, bus, buses[hb.id]))

        devices: list[m.Device] = []
        serials = {d.serial for d in cx.devices if d.serial is not None}
        auto_serial = (n for n in range(1, 1 << 20) if n not in serials)
        sw_by_id = {w.id: w for w in switches}
        for d in cx.devices:
            switch: str | None
            if d.attach in sw_by_id:
                parent = rp_by_id[sw_by_id[d.attach].root_port]
                port_id, switch = dsp_of_dev[d.id], d.attach
            else:
                parent, port_id, switch = rp_by_id[d.attach], d.attach, None
            dc = d.dynamic_capacity
            devices.append(m.Device(
                id=d.id, bus=port_id, root_port=parent.id, switch=switch,
                host_bridge=parent.host_bridge,
                volatile=d.volatile, persistent=d.persistent, lsa=d.lsa or 0,
                serial=d.serial if d.serial is not None else next(auto_serial),
                dc_size=dc.size if dc else 0, dc_regions=dc.regions if dc else 0,
                present=d.present))

        n_dram = len(nodes)
        windows = [m.Window(i, w.id, tuple(w.targets), w.size, w.granularity, n_dram + i)
                   for i, w in enumerate(cx.windows)]
        win_by_id = {w.id: w for w in windows}
        dev_by_id = {d.id: d for d in devices}
        regions: list[m.Region] = []
        for r in cx.regions:
            win = win_by_id.get(r.window)
            if win is None or any(d not in dev_by_id for d in r.devices):
                continue  # reported by check_regions
            ways = len(r.devices)
            cap = "volatile" if r.type == "ram" else "persistent"
            size = r.size or ways * min(getattr(dev_by_id[d], cap) for d in r.devices)
            gran = r.granularity or (win.granularity if win.ways > 1 else 4096)
            online = r.online or ("movable" if r.type == "ram" else None)
            regions.append(m.Region(r.id, r.window, r.type, tuple(r.devices), ways, gran, size,
                                    online, win.node, _perf(r.performance),
                                    deferred=not all(dev_by_id[d].present for d in r.devices)))

        return m.Topology(
            name=spec.name, description=spec.description, source=self.doc.file,
            cpus=spec.machine.cpus, accel=spec.machine.accel, maxmem=spec.machine.maxmem,
            nodes=tuple(nodes), host_bridges=tuple(host_bridges), root_ports=tuple(root_ports),
            switches=tuple(switches), devices=tuple(devices), windows=tuple(windows),
            regions=tuple(regions))

    def check_buses(self, hbs: list[m.HostBridge]) -> None:
        spans = sorted((hb.bus_nr, hb.bus_nr + hb.buses - 1, i) for i, hb in enumerate(hbs))
        for (_, end, _), (start, _, j) in itertools.pairwise(spans):
            if start <= end:
                self.bad(("cxl", "host_bridges", j, "bus_nr"), f"bus numbers {start}.."
                         f"{start + hbs[j].buses - 1} of '{hbs[j].id}' overlap another host "
                         "bridge's hierarchy")
        for i, hb in enumerate(hbs):
            if hb.bus_nr + hb.buses - 1 > 255:
                self.bad(("cxl", "host_bridges", i, "bus_nr"), f"'{hb.id}' needs {hb.buses} "
                         f"buses from {hb.bus_nr}: past bus 255")

    # -- helpers ---------------------------------------------------------------

    def _dangling(self, ref: str, kind: str, known: set[str]) -> str:
        have = ", ".join(sorted(known)) or "none defined"
        return f"no {kind} '{ref}' (known: {have})"

    def _id_at(self, path: Path) -> str:
        node: Any = self.doc.data
        for part in path:
            node = node[part]
        return str(node.get("id", "?")) if isinstance(node, dict) else "?"


def _perf(p: s.Performance | None) -> m.Performance:
    if p is None:
        return m.Performance()
    return m.Performance(p.read_latency, p.write_latency, p.read_bandwidth, p.write_bandwidth)
