"""The plugin inside a scenario: phase marks, the promotion policy, the summary.

QEMU starts paused with the plugin knowing nothing of the address map: the
DRAM ranges, read from that same machine's memory tree, go to the plugin
over its control socket before the first guest instruction runs; once the
guest has created its regions, their ranges and interleave follow.
A ``mark`` step closes a phase under a name; a ``promote`` step ranks the
pages of a node by the accesses the plugin counted in a named phase and
moves the hottest to another node, by physical address (move_phys_pages)
or by virtual address (move_pages), as a user-space tiering policy would.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxlrig.errors import CheckFailed
from cxlrig.guest.boot import Guest
from cxlrig.guest.cxl import NodeState
from cxlrig.machine.runner import Machine
from cxlrig.plugin import (
    AddressMap,
    Control,
    PluginConfigError,
    build_plugin,
    dram_map,
    load_results,
    map_args,
    plugin_args,
    region_map,
)
from cxlrig.plugin.results import Phase, PluginResults
from cxlrig.qemu.args import Plugin
from cxlrig.qemu.mtree import MemoryLayout
from cxlrig.results import Access, Mark, NodeAccess, PluginData, SeriesPoint, Step
from cxlrig.results import Phase as PhaseResult
from cxlrig.scenario.model import PluginSpec, ScenarioSpec, StepSpec
from cxlrig.scenario.runner import Context, Hook, ScenarioRunError, last_json_object, lookup
from cxlrig.topology import Topology

log = logging.getLogger(__name__)


class PluginMapError(CheckFailed):
    """The plugin would count some of the guest's memory under the wrong node."""


def check_iomem(amap: AddressMap, iomem: str, nodes: Mapping[int, NodeState]) -> list[str]:
    """Every 'System RAM' range of the guest's /proc/iomem must be covered, with no
    gap, by the plugin's node ranges, and every online node must have one.

    One range may span several nodes: Linux lists adjacent DRAM nodes'
    memory as a single 'System RAM' resource.
    """
    problems = []
    spans = sorted((r.start, r.end) for r in amap.nodes)
    for line in iomem.splitlines():
        span = line.strip().split(" : ")[0]
        if "-" not in span:
            continue
        start, end = (int(x, 16) for x in span.split("-"))
        if _gap(spans, start, end + 1) is not None:
            problems.append(f"guest System RAM {start:#x}-{end:#x} is not in the plugin's map")
    mapped = set(amap.node_ids)
    for n, st in nodes.items():
        if st.mem_total and n not in mapped:
            problems.append(f"guest node {n} has memory the plugin does not map")
    return problems


def _gap(spans: list[tuple[int, int]], start: int, end: int) -> int | None:
    """The first address of [start, end) that no span covers, or None."""
    at = start
    for lo, hi in spans:
        if hi <= at:
            continue
        if lo > at:
            return at
        at = hi
        if at >= end:
            return None
    return at if at < end else None


def workload_pages(data: Any) -> dict[str, str]:
    """PA -> VA of every page a hotcold or mpp report lists."""
    pages: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "pa" in node and "va" in node and node["pa"]:
                pages[str(node["pa"]).lower()] = str(node["va"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    return pages


class PluginSession:
    """One plugin for one scenario run."""

    def __init__(self, cfg: PluginSpec, topo: Topology, run_path: Path) -> None:
        self.topo = topo
        self.cfg = cfg
        self.out = run_path / "plugin.json"
        self._sockdir = Path(tempfile.mkdtemp(prefix="cxlrig-p-"))
        self.control_path = self._sockdir / "control.sock"
        # No map yet: it is sent over the control socket while QEMU is paused.
        args = plugin_args(AddressMap(), out=self.out, control=self.control_path,
                           sample=cfg.sample, interval=cfg.interval or None,
                           interval_unit=cfg.interval_unit, delay=cfg.delay)
        self.plugin = Plugin(build_plugin(), args)
        self.layout: MemoryLayout | None = None
        self.control: Control | None = None

    @classmethod
    def for_scenario(cls, spec: ScenarioSpec, topo: Topology,
                     run_path: Path) -> PluginSession | None:
        return cls(spec.plugin, topo, run_path) if spec.plugin is not None else None

    def before_start(self, machine: Machine, layout: MemoryLayout) -> None:
        """QEMU is paused: give the plugin the DRAM map before any access is made."""
        self.layout = layout
        self.control = Control(self.control_path)
        self.control.connect()
        self.control.add(map_args(dram_map(self.topo, layout)))

    def attach(self, guest: Guest) -> None:
        """Tell the running plugin where the guest put its regions, then check
        the plugin's map against the guest's own view of its memory."""
        assert self.control is not None and self.layout is not None, "before_start() first"
        self.control.snapshot("boot")
        bases = {r.id: r.base for r in guest.regions if r.type == "ram"}
        amap = dram_map(self.topo, self.layout)
        if bases:
            regions = region_map(self.topo, self.layout, bases)
            self.control.add(map_args(regions))
            amap = amap.merged(regions)
        if self.cfg.delay and not amap.latencies:
            raise PluginConfigError(["delay: needs a latency for at least one node "
                                     "(performance: in the topology)"])
        self.control.reset()
        iomem = guest.session.run("grep 'System RAM' /proc/iomem", check=True).stdout
        problems = check_iomem(amap, iomem, guest.nodes)
        if problems:
            raise PluginMapError("the plugin's address map disagrees with the guest:\n  "
                                 + "\n  ".join(problems))

    def control_snapshot(self, name: str) -> int:
        """Close the current phase under ``name`` (the file is written when this returns)."""
        assert self.control is not None, "attach() first"
        return self.control.snapshot(name)

    def hooks(self) -> dict[str, Hook]:
        return {"mark": self._mark, "promote": self._promote, "tiering": self._tiering}

    def _tiering(self, st: StepSpec, loop: dict[str, Any], guest: Guest,
                 ctx: Context) -> Step:
        from cxlrig.scenario.tiering import TieringRun

        return TieringRun(st, guest, ctx, self.control_snapshot, self._results).run()

    def _results(self) -> PluginResults:
        return load_results(self.out)

    def _mark(self, st: StepSpec, loop: dict[str, Any], guest: Guest,
              ctx: Context) -> Step:
        assert self.control is not None and st.mark is not None
        name = ctx.expand(st.mark)
        start = time.monotonic()
        index = self.control.snapshot(name)
        phase = self._results().phase(name)
        data: dict[str, Any] = {"phase": name, "index": index, **self._shares(phase)}
        if st.workload is not None:
            data.update(self._workload_share(phase, ctx.steps[st.workload].data))
        return Step(id=st.id or "", kind="mark", command=f"mark {name}", status=0,
                    seconds=time.monotonic() - start, data=data)

    def _shares(self, phase: Phase) -> dict[str, Any]:
        dram = [n.node for n in self.topo.nodes]
        return {"dram_share": phase.dram_share(dram), "accesses": phase.node_accesses,
                "nodes": {str(k): {"reads": v.reads, "writes": v.writes}
                          for k, v in phase.nodes.items()},
                # Per type-3 device, as the plugin attributes each CXL access
                # through its region's interleave.
                "devices": {k: {"reads": v.reads, "writes": v.writes}
                            for k, v in phase.devices.items()}}

    def _workload_share(self, phase: Phase, listing: Any) -> dict[str, Any]:
        """DRAM's share of the accesses to the pages a workload listed."""
        wanted = set(workload_pages(listing))
        dram = {n.node for n in self.topo.nodes}
        total = on_dram = 0
        for p in phase.pages:
            if f"{p.pa:#x}" in wanted:
                total += p.total
                on_dram += p.total if p.node in dram else 0
        return {"workload_accesses": total,
                "workload_dram_share": on_dram / total if total else None}

    def _promote(self, st: StepSpec, loop: dict[str, Any], guest: Guest,
                 ctx: Context) -> Step:
        pr = st.promote
        assert pr is not None
        source = int(ctx.resolve(pr.source_node))
        target = int(ctx.resolve(pr.target_node))
        phase = self._results().phase(ctx.expand(pr.phase))
        top = phase.top_pages(pr.top, node=source)
        if not top:
            raise ScenarioRunError(f"promote: no page of node {source} was touched in phase "
                                   f"'{pr.phase}'")
        pas = [f"{p.pa:#x}" for p in top]
        if pr.via == "phys":
            command = f"mpp phys --pa {','.join(pas)} --to {target}"
        else:
            assert pr.pages_from is not None
            listing = ctx.steps[pr.pages_from].data
            va_of = workload_pages(listing)
            try:
                pid = lookup(listing, "pid")
            except KeyError:
                raise ScenarioRunError(f"promote: step '{pr.pages_from}' has no pid") from None
            vas = [va_of[pa] for pa in pas if pa in va_of]
            if not vas:
                raise ScenarioRunError("promote: none of the hottest pages belongs to the "
                                       f"workload of step '{pr.pages_from}'")
            command = f"mpp virt --pid {pid} --va {','.join(vas)} --to {target}"
        res = guest.session.run(command)
        report = last_json_object(res.stdout)
        if report is None:
            raise ScenarioRunError(f"promote: {command!r} gave no report: {res.stderr[-300:]}")
        status = report.get("first_call", {}).get("status", [])
        data = {"via": pr.via, "ranked": [{"pa": f"{p.pa:#x}", "accesses": p.total}
                                          for p in top],
                "requested": len(status), "moved": sum(1 for s in status if s == target),
                "call": report.get("first_call")}
        return Step(id=st.id or "", kind="promote", command=command, user="root",
                    status=res.status, seconds=res.seconds, stdout=res.stdout,
                    stderr=res.stderr, data=data)

    def summary(self) -> PluginData | None:
        """The plugin's phases, series and marks for the results; None if it left none."""
        if self.control is not None:
            self.control.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)
        try:
            results = self._results()
        except Exception as exc:  # a crashed QEMU may leave none: say so, keep going
            log.warning("plugin results unreadable: %s", exc)
            return None
        dram = [n.node for n in self.topo.nodes]
        phases = tuple(PhaseResult(
            name=ph.name,
            nodes={k: NodeAccess(v.reads, v.writes, v.modelled_ns) for k, v in ph.nodes.items()},
            devices={k: Access(v.reads, v.writes) for k, v in ph.devices.items()},
            dram_share=ph.dram_share(dram)) for ph in results.named_phases)
        # Series points and marks on one clock: the plugin's ns since load.
        series = tuple(SeriesPoint(t=float(pt.ns), unit="ns",
                                   nodes={k: Access(v.reads, v.writes)
                                          for k, v in pt.nodes.items()})
                       for pt in results.series)
        marks = tuple(Mark(ph.name, float(ph.end_ns)) for ph in results.named_phases
                      if ph.name is not None)
        return PluginData(phases=phases, series=series, marks=marks, sample=results.sample)
