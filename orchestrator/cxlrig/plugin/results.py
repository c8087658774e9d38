"""The plugin's output file, read into frozen dataclasses.

The format is described in ``qemu-plugin/README.md``; this is its only
reader. Counts are what the plugin reports: with ``sample`` above 1 they are
estimates (sampled counts times ``sample``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxlrig.errors import CxlrigError

log = logging.getLogger(__name__)

#: The output format this reader understands (the plugin's ``format``).
FORMAT = 1


class ResultsError(CxlrigError):
    """The output file is missing, not JSON, or not in the expected format."""


@dataclass(frozen=True)
class Counts:
    reads: int
    writes: int

    @property
    def total(self) -> int:
        return self.reads + self.writes


@dataclass(frozen=True)
class NodeCounts(Counts):
    #: reads * read latency + writes * write latency; None without a latency.
    modelled_ns: int | None = None


@dataclass(frozen=True)
class PageCounts:
    pa: int
    node: int
    reads: int
    writes: int
    #: The instruction clock at the page's last access.
    last: int

    @property
    def total(self) -> int:
        return self.reads + self.writes


@dataclass(frozen=True)
class Unmatched:
    """Accesses outside every node range: RAM or ROM, I/O, and no address at all."""

    ram: Counts
    io: Counts
    unknown: Counts

    @property
    def total(self) -> int:
        return self.ram.total + self.io.total + self.unknown.total


@dataclass(frozen=True)
class Counters:
    """Counts over some span: a phase, or the whole run."""

    insns: int
    nodes: Mapping[int, NodeCounts]
    regions: Mapping[str, Counts]
    devices: Mapping[str, Counts]
    unmatched: Unmatched

    @property
    def node_accesses(self) -> int:
        return sum(c.total for c in self.nodes.values())

    @property
    def accesses(self) -> int:
        """Every access: the node ranges and the unmatched ones together."""
        return self.node_accesses + self.unmatched.total

    def share(self, nodes: Collection[int]) -> float | None:
        """The fraction of node-range accesses that went to ``nodes``; None without any."""
        total = self.node_accesses
        if not total:
            return None
        return sum(c.total for n, c in self.nodes.items() if n in nodes) / total

    def dram_share(self, dram_nodes: Collection[int]) -> float | None:
        """Share of DRAM: the caller says which nodes are DRAM (the topology knows)."""
        return self.share(dram_nodes)

    def modelled_ns(self) -> int:
        """Modelled memory time of every node that has a latency."""
        return sum(c.modelled_ns or 0 for c in self.nodes.values())


@dataclass(frozen=True)
class Phase(Counters):
    #: None for the phase still open when the file was written.
    name: str | None = None
    index: int = 0
    start_insns: int = 0
    end_insns: int = 0
    start_ns: int = 0
    end_ns: int = 0
    #: What delay=on slept during the phase.
    delay_ns: int = 0
    #: The model's extra time for the phase's accesses while the delay was on
    #: (None from plugins before 1.1.0). It differs from ``delay_ns`` by the
    #: change of the outstanding debt over the phase (see the plugin's README).
    delay_owed_ns: int | None = None
    pages_touched: int = 0
    #: Touched pages, most accessed first (at most ``pages_top`` of them).
    pages: tuple[PageCounts, ...] = ()

    def top_pages(self, n: int, node: int | None = None) -> tuple[PageCounts, ...]:
        """The ``n`` most accessed pages, of ``node`` only if given."""
        pages = self.pages if node is None else tuple(p for p in self.pages if p.node == node)
        return pages[:n]


@dataclass(frozen=True)
class SeriesPoint:
    insns: int
    ns: int
    phase: int
    #: Accesses per node since the previous point.
    nodes: Mapping[int, Counts]


@dataclass(frozen=True)
class NodeConfig:
    id: int
    ranges: tuple[tuple[int, int], ...]
    read_ns: int | None
    write_ns: int | None


@dataclass(frozen=True)
class RegionConfig:
    name: str
    base: int
    size: int
    ways: int
    granularity: int
    devices: tuple[str, ...]


@dataclass(frozen=True)
class PluginResults:
    format: int
    version: str
    status: str  # "running" (periodic or snapshot write) or "exited"
    args: tuple[str, ...]
    #: Map arguments added over the control socket, in order.
    added: tuple[str, ...]
    sample: int
    page_size: int
    pages_enabled: bool
    pages_top: int
    tick_insns: int
    clock_insns: int
    clock_ns: int
    delay_enabled: bool
    slept_ns: int
    #: Callbacks QEMU gave an impossible vCPU index (see the plugin's README).
    bad_index: int
    interval: int | None
    interval_unit: str | None
    nodes: tuple[NodeConfig, ...]
    regions: tuple[RegionConfig, ...]
    totals: Counters
    phases: tuple[Phase, ...]
    series: tuple[SeriesPoint, ...]
    # Written since plugin 1.1.0 (None from older files, same format).
    #: Per-vCPU counter slots.
    vcpus: int | None = None
    #: The run-time switch (``delay on|off``) when the file was written.
    delay_active: bool | None = None
    #: The debt at which a vCPU sleeps.
    delay_min_ns: int | None = None
    delay_owed_ns: int | None = None
    #: Owed minus slept: negative after an oversleep.
    delay_debt_ns: int | None = None
    delay_sleeps: int | None = None
    #: The largest amount one sleep overshot its debt by.
    delay_max_overshoot_ns: int | None = None

    @property
    def exited(self) -> bool:
        return self.status == "exited"

    @property
    def sampled(self) -> bool:
        return self.sample > 1

    def phase(self, name: str) -> Phase:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(f"no phase named {name!r} (have {[p.name for p in self.phases]})")

    @property
    def named_phases(self) -> tuple[Phase, ...]:
        """The phases closed by a snapshot, without the trailing open one."""
        return tuple(p for p in self.phases if p.name is not None)


# -- parsing --------------------------------------------------------------------------

def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class _Reader:
    """Typed access to the decoded JSON, with the path of every problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, what: str) -> ResultsError:
        return ResultsError(f"{self.source}: {where}: {what}")

    def obj(self, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(where, f"expected an object, got {type(v).__name__}")
        return v

    def get(self, d: dict[str, Any], key: str, where: str) -> Any:
        if key not in d:
            raise self.fail(_at(where, key), "missing")
        return d[key]

    def int_(self, d: dict[str, Any], key: str, where: str) -> int:
        v = self.get(d, key, where)
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.fail(_at(where, key), f"expected an integer, got {v!r}")
        return v

    def opt_int(self, d: dict[str, Any], key: str, where: str) -> int | None:
        return None if self.get(d, key, where) is None else self.int_(d, key, where)

    def newer_int(self, d: dict[str, Any], key: str, where: str) -> int | None:
        """A key later plugins added within the same format: None when absent."""
        return self.int_(d, key, where) if key in d else None

    def str_(self, d: dict[str, Any], key: str, where: str) -> str:
        v = self.get(d, key, where)
        if not isinstance(v, str):
            raise self.fail(_at(where, key), f"expected a string, got {v!r}")
        return v

    def bool_(self, d: dict[str, Any], key: str, where: str) -> bool:
        v = self.get(d, key, where)
        if not isinstance(v, bool):
            raise self.fail(_at(where, key), f"expected true or false, got {v!r}")
        return v

    def list_(self, d: dict[str, Any], key: str, where: str) -> list[Any]:
        v = self.get(d, key, where)
        if not isinstance(v, list):
            raise self.fail(_at(where, key), f"expected a list, got {type(v).__name__}")
        return v

    def counts(self, v: Any, where: str) -> Counts:
        d = self.obj(v, where)
        return Counts(self.int_(d, "reads", where), self.int_(d, "writes", where))

    def node_key(self, k: str, where: str) -> int:
        if not k.isdigit():
            raise self.fail(where, f"node key {k!r} is not a number")
        return int(k)

    def counters(self, d: dict[str, Any], where: str) -> dict[str, Any]:
        nodes = {}
        for k, v in self.obj(self.get(d, "nodes", where), f"{where}.nodes").items():
            w = f"{where}.nodes.{k}"
            c = self.obj(v, w)
            nodes[self.node_key(k, w)] = NodeCounts(self.int_(c, "reads", w),
                                                    self.int_(c, "writes", w),
                                                    self.opt_int(c, "modelled_ns", w))
        regions = {k: self.counts(v, f"{where}.regions.{k}")
                   for k, v in self.obj(self.get(d, "regions", where), where).items()}
        devices = {k: self.counts(v, f"{where}.devices.{k}")
                   for k, v in self.obj(self.get(d, "devices", where), where).items()}
        u = self.obj(self.get(d, "unmatched", where), f"{where}.unmatched")
        unmatched = Unmatched(*(self.counts(self.get(u, k, f"{where}.unmatched"),
                                            f"{where}.unmatched.{k}")
                                for k in ("ram", "io", "unknown")))
        return {"insns": self.int_(d, "insns", where), "nodes": nodes, "regions": regions,
                "devices": devices, "unmatched": unmatched}

    def phase(self, v: Any, where: str) -> Phase:
        d = self.obj(v, where)
        name = self.get(d, "name", where)
        if name is not None and not isinstance(name, str):
            raise self.fail(f"{where}.name", f"expected a string or null, got {name!r}")
        start = self.obj(self.get(d, "start", where), f"{where}.start")
        end = self.obj(self.get(d, "end", where), f"{where}.end")
        pages = []
        for i, p in enumerate(self.list_(d, "pages", where)):
            w = f"{where}.pages[{i}]"
            pd = self.obj(p, w)
            pages.append(PageCounts(*(self.int_(pd, k, w)
                                      for k in ("pa", "node", "reads", "writes", "last"))))
        return Phase(**self.counters(d, where), name=name, index=self.int_(d, "index", where),
                     start_insns=self.int_(start, "insns", f"{where}.start"),
                     end_insns=self.int_(end, "insns", f"{where}.end"),
                     start_ns=self.int_(start, "ns", f"{where}.start"),
                     end_ns=self.int_(end, "ns", f"{where}.end"),
                     delay_ns=self.int_(d, "delay_ns", where),
                     delay_owed_ns=self.newer_int(d, "delay_owed_ns", where),
                     pages_touched=self.int_(d, "pages_touched", where), pages=tuple(pages))

    def point(self, v: Any, where: str) -> SeriesPoint:
        d = self.obj(v, where)
        nodes = {self.node_key(k, where): self.counts(c, f"{where}.nodes.{k}")
                 for k, c in self.obj(self.get(d, "nodes", where), where).items()}
        return SeriesPoint(self.int_(d, "insns", where), self.int_(d, "ns", where),
                           self.int_(d, "phase", where), nodes)


def parse(data: Any, source: str = "<plugin output>") -> PluginResults:
    """Results from the decoded JSON; raises :class:`ResultsError` naming the bad key."""
    r = _Reader(source)
    top = r.obj(data, "top level")
    fmt = r.int_(top, "format", "")
    if fmt != FORMAT:
        raise r.fail("format", f"{fmt} is not the supported format {FORMAT} "
                               "(plugin and orchestrator out of step?)")
    clock = r.obj(r.get(top, "clock", ""), "clock")
    delay = r.obj(r.get(top, "delay", ""), "delay")
    interval = r.get(top, "interval", "")
    if interval is not None:
        interval = r.obj(interval, "interval")
    nodes = []
    for i, n in enumerate(r.list_(top, "nodes", "")):
        w = f"nodes[{i}]"
        nd = r.obj(n, w)
        ranges = tuple((int(a), int(b)) for a, b in r.list_(nd, "ranges", w))
        nodes.append(NodeConfig(r.int_(nd, "id", w), ranges, r.opt_int(nd, "read_ns", w),
                                r.opt_int(nd, "write_ns", w)))
    regions = []
    for i, g in enumerate(r.list_(top, "regions", "")):
        w = f"regions[{i}]"
        gd = r.obj(g, w)
        regions.append(RegionConfig(r.str_(gd, "name", w), r.int_(gd, "base", w),
                                    r.int_(gd, "size", w), r.int_(gd, "ways", w),
                                    r.int_(gd, "granularity", w),
                                    tuple(str(x) for x in r.list_(gd, "devices", w))))
    totals = Counters(**r.counters(r.obj(r.get(top, "totals", ""), "totals"), "totals"))
    return PluginResults(
        format=fmt, version=r.str_(top, "version", ""), status=r.str_(top, "status", ""),
        args=tuple(str(a) for a in r.list_(top, "args", "")),
        added=tuple(str(a) for a in r.list_(top, "added", "")),
        sample=r.int_(top, "sample", ""), page_size=r.int_(top, "page_size", ""),
        pages_enabled=r.bool_(top, "pages", ""), pages_top=r.int_(top, "pages_top", ""),
        tick_insns=r.int_(top, "tick_insns", ""),
        clock_insns=r.int_(clock, "insns", "clock"), clock_ns=r.int_(clock, "ns", "clock"),
        delay_enabled=r.bool_(delay, "enabled", "delay"),
        slept_ns=r.int_(delay, "slept_ns", "delay"),
        bad_index=r.int_(top, "bad_index", ""),
        interval=None if interval is None else r.int_(interval, "n", "interval"),
        interval_unit=None if interval is None else r.str_(interval, "unit", "interval"),
        nodes=tuple(nodes), regions=tuple(regions), totals=totals,
        phases=tuple(r.phase(p, f"phases[{i}]")
                     for i, p in enumerate(r.list_(top, "phases", ""))),
        series=tuple(r.point(p, f"series[{i}]")
                     for i, p in enumerate(r.list_(top, "series", ""))),
        vcpus=r.newer_int(top, "vcpus", ""),
        delay_active=r.bool_(delay, "active", "delay") if "active" in delay else None,
        delay_min_ns=r.newer_int(delay, "min_ns", "delay"),
        delay_owed_ns=r.newer_int(delay, "owed_ns", "delay"),
        delay_debt_ns=r.newer_int(delay, "debt_ns", "delay"),
        delay_sleeps=r.newer_int(delay, "sleeps", "delay"),
        delay_max_overshoot_ns=r.newer_int(delay, "max_overshoot_ns", "delay"))


def loads(text: str, source: str = "<plugin output>") -> PluginResults:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{source}: not JSON: {exc}") from exc
    return parse(data, source)


def load(path: Path) -> PluginResults:
    """Read the plugin's output file (written atomically, so never half a file)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read the plugin output: {exc}") from exc
    return loads(text, str(path))
