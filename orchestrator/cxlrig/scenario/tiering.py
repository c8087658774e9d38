"""The tiering comparison: one policy against a workload with a known hot set.

A ``tiering`` step starts ``hotcold`` with its hot and cold sets placed on the
CXL node and then unbound, starts a policy, and lets the workload run
``intervals`` phases. After each phase the plugin closes a phase of its own,
so each interval has its ground truth (every access to each of the
workload's pages, on the node that served it), and the workload reports where
its pages are. From these the step computes, per interval, DRAM's share of
the workload's accesses and the share of the hot set on DRAM, and over the
run: the time until 90 % of the hot set was on DRAM, the precision and
recall of the pages the policy moved, pages migrated and the CPU time the
policy used in the guest.

The policies:

- ``none``: nothing moves.
- ``move_phys_pages`` and ``move_pages``: a user-space policy that, after
  each interval, promotes the most accessed pages of the CXL node in that
  interval, as a device's hotness monitor would report them (the plugin
  stands in for it), by physical address, or by virtual address after
  translating through the workload's page list.
- ``numa_balancing``: ``kernel.numa_balancing=2``, the kernel's promotion of
  pages of slower tiers on NUMA hint faults.
- ``damon``: a kdamond on the CXL node's physical range with a
  ``migrate_hot`` scheme to DRAM.

Under TCG a CPU sets a PTE's accessed bit only when it refills its TLB, and
x86 Linux clears the bit without a flush, so a page that stays hot is never
seen accessed again by DAMON (or page_idle) unless the TLB is refilled. A
real CPU's TLB is small; QEMU's is not. The workload therefore shares its CPU
with a process that wakes every 5 ms: each switch reloads CR3, which empties
the TLB, as a real CPU's evictions would. Every policy runs with it.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cxlrig.guest.boot import Guest
from cxlrig.plugin.results import Phase, PluginResults
from cxlrig.results import Step
from cxlrig.scenario.model import StepSpec, TieringSpec
from cxlrig.scenario.runner import Context, ScenarioRunError, last_json_object

#: The share of the hot set on DRAM that counts as "promoted".
HOT_SET_DONE = 0.9
#: /proc/vmstat counters whose change over the run is reported.
VMSTAT = ("pgmigrate_success", "pgmigrate_fail", "pgpromote_success", "pgpromote_candidate",
          "numa_hint_faults", "numa_pages_migrated")
#: USER_HZ: /proc/PID/stat counts CPU time in these ticks.
USER_HZ = 100
#: The process that makes the workload's CPU switch address spaces (see above).
TLB_REFILL = "while :; do usleep 5000; done"


@dataclass(frozen=True)
class PageAt:
    """One page of the workload in a report: which set, where it was."""

    set: str
    index: int
    va: str
    pa: int | None
    node: int | None


def pages_of(report: Mapping[str, Any]) -> dict[tuple[str, int], PageAt]:
    """The workload's pages as a ``hotcold`` pause report lists them."""
    out: dict[tuple[str, int], PageAt] = {}
    for name, s in (report.get("sets") or {}).items():
        for p in s.get("pages") or []:
            pa = int(p["pa"], 16) if isinstance(p.get("pa"), str) else None
            node = p.get("node") if isinstance(p.get("node"), int) else None
            out[(name, int(p["i"]))] = PageAt(name, int(p["i"]), p["va"], pa, node)
    return out


def hot_set(spec: TieringSpec, interval: int) -> str:
    """Which of the workload's sets is hot during ``interval`` (1-based)."""
    return "cold" if spec.swap_at is not None and interval >= spec.swap_at else "hot"


def interval_share(phase: Phase, pages: list[Mapping[tuple[str, int], PageAt]],
                   dram: set[int]) -> tuple[int, int]:
    """(accesses to the workload's pages, of them served by DRAM) in one plugin phase.

    A page that moved during the interval had two addresses in it: every
    address any of ``pages`` (the listings before and after) gives it counts.
    """
    ours = {p.pa & ~0xFFF for listing in pages for p in listing.values() if p.pa is not None}
    total = on_dram = 0
    for c in phase.pages:
        if c.pa in ours:
            total += c.total
            on_dram += c.total if c.node in dram else 0
    return total, on_dram


@dataclass
class Summary:
    """The run's figures, from the per-interval records."""

    final_dram_share: float | None
    time_to_90_s: float | None
    moved: int
    moved_hot: int
    precision: float | None
    recall: float | None


def summarize(spec: TieringSpec, intervals: list[dict[str, Any]],
              moves: list[tuple[int, str, int]]) -> Summary:
    """``moves``: (interval, set, index) of each page the policy took from the CXL
    node to DRAM. Precision judges each move by the hot set of its interval;
    recall counts the pages of the last interval's hot set that were moved."""
    final = intervals[-1]["dram_share"] if intervals else None
    start = spec.swap_at or 1
    t90 = next((iv["t_s"] - (start - 1) * spec.seconds for iv in intervals
                if iv["i"] >= start and iv["hot_on_dram"] >= HOT_SET_DONE), None)
    good = sum(1 for i, name, _ in moves if name == hot_set(spec, i))
    final_hot = hot_set(spec, spec.intervals)
    hot_size = spec.hot_pages if final_hot == "hot" else spec.cold_pages
    found = {index for _, name, index in moves if name == final_hot}
    return Summary(
        final_dram_share=final,
        time_to_90_s=t90,
        moved=len(moves),
        moved_hot=good,
        precision=good / len(moves) if moves else None,
        recall=len(found) / hot_size,
    )


class TieringRun:
    """One tiering step in a running guest."""

    def __init__(self, st: StepSpec, guest: Guest, ctx: Context,
                 snapshot: Callable[[str], int], results: Callable[[], PluginResults]) -> None:
        assert st.tiering is not None
        self.st = st
        self.spec = st.tiering
        self.guest = guest
        self.ctx = ctx
        self.snapshot = snapshot
        self.results = results
        self.source = int(ctx.resolve(self.spec.source_node))
        self.target = int(ctx.resolve(self.spec.target_node))
        self.dram = {n.node for n in ctx.topology.nodes}
        self.name = f"tier-{st.id or self.spec.policy}"
        self.cpu = ctx.topology.nodes[0].cpus[0] if ctx.topology.nodes[0].cpus else 0
        self.commands: list[str] = []

    # ---- guest commands --------------------------------------------------------------

    def _sh(self, command: str, *, timeout: float | None = None) -> str:
        """Run ``command`` in the guest; its stdout, or raise naming it."""
        self.commands.append(command)
        res = self.guest.session.run(command, timeout=timeout)
        if res.status != 0:
            raise ScenarioRunError(f"tiering {self.spec.policy}: {command!r} failed (status "
                                   f"{res.status}): {(res.stderr or res.stdout)[-400:]}")
        return res.stdout

    def _run(self, command: str, *, timeout: float | None = None) -> Any:
        """Run ``command``; the last JSON object it printed."""
        out = self._sh(command, timeout=timeout)
        data = last_json_object(out)
        if data is None:
            raise ScenarioRunError(f"tiering {self.spec.policy}: {command!r} printed no JSON: "
                                   f"{out[-400:]!r}")
        return data

    def _vmstat(self) -> dict[str, int | None]:
        out = self._sh("cat /proc/vmstat")
        values = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
        # A counter the kernel does not keep (CONFIG_VM_EVENT_COUNTERS off) is None.
        return {k: int(values[k]) if k in values else None for k in VMSTAT}

    def _workload(self) -> str:
        s = self.spec
        args = (f"--hot-pages {s.hot_pages} --cold-pages {s.cold_pages} --hot-node "
                f"{self.source} --cold-node {self.source} --unbind --ratio {s.ratio} "
                f"--cold-ms {s.cold_ms} --phases {s.intervals} --seconds {s.seconds}")
        if s.swap_at is not None:
            args += f" --swap-at {s.swap_at}"
        return f"taskset -c {self.cpu} cxlrig-phase {self.name} {args}"

    # ---- policies ----------------------------------------------------------------------

    def _start_policy(self) -> dict[str, Any]:
        p = self.spec.policy
        if p == "numa_balancing":
            self._sh("echo 2 > /proc/sys/kernel/numa_balancing")
            return {"sysctl": "kernel.numa_balancing=2"}
        if p == "damon":
            data: dict[str, Any] = self._run(
                f"cxlrig-damon start {self.source} {self.target} "
                f"{self.spec.damon_min_accesses}")
            return data
        return {}

    def _stop_policy(self) -> dict[str, Any]:
        p = self.spec.policy
        if p == "numa_balancing":
            self._sh("echo 0 > /proc/sys/kernel/numa_balancing")
        if p == "damon":
            data: dict[str, Any] = self._run("cxlrig-damon stop")
            return data
        return {}

    def _promote(self, phase: Phase, listing: Mapping[tuple[str, int], PageAt],
                 pid: int) -> dict[str, Any]:
        """The user-space policy's move after an interval; what it asked and what moved."""
        s = self.spec
        ranked = [c for c in phase.top_pages(len(phase.pages), node=self.source)
                  if c.total >= s.min_accesses][:s.top]
        if not ranked:
            return {"requested": 0, "moved": 0, "ns": 0}
        if s.policy == "move_phys_pages":
            pas = ",".join(f"{c.pa:#x}" for c in ranked)
            command = f"mpp phys --pa {pas} --to {self.target}"
        else:
            va_of = {p.pa: p.va for p in listing.values() if p.pa is not None}
            vas = [va_of[c.pa] for c in ranked if c.pa in va_of]
            if not vas:
                return {"requested": 0, "moved": 0, "ns": 0}
            command = f"mpp virt --pid {pid} --va {','.join(vas)} --to {self.target}"
        report = self._run(command)
        call = report.get("first_call") or {}
        status = call.get("status") or []
        return {"requested": len(status), "moved": sum(1 for x in status if x == self.target),
                "ns": int(call.get("ns") or 0), "errno": call.get("errno")}

    # ---- the run -----------------------------------------------------------------------

    def run(self) -> Step:
        started = time.monotonic()
        refill = self._sh(f"taskset -c {self.cpu} sh -c {shlex.quote(TLB_REFILL)} "
                          "</dev/null >/dev/null 2>&1 & echo $!").strip().splitlines()[-1]
        pids = [int(refill)]
        try:
            first = self._run(self._workload())
            pids.append(int(first["pid"]))
            return self._measure(first, started)
        finally:
            # Whatever happened, the next step finds no policy on and nothing running.
            self.guest.session.run(
                f"kill {' '.join(map(str, pids))} 2>/dev/null; "
                "echo 0 > /proc/sys/kernel/numa_balancing; "
                "echo off > /sys/kernel/mm/damon/admin/kdamonds/0/state 2>/dev/null; true")

    def _measure(self, first: Mapping[str, Any], started: float) -> Step:
        s = self.spec
        pid = int(first["pid"])
        prev = pages_of(first)
        start_cpu = first.get("cpu") or {}
        vm0 = self._vmstat()
        policy = self._start_policy()
        self.snapshot(f"{self.name}-start")
        intervals: list[dict[str, Any]] = []
        moves: list[tuple[int, str, int]] = []
        user_ns = 0
        last: Mapping[str, Any] = first
        for i in range(1, s.intervals + 1):
            report = self._run(f"cxlrig-phase --next {self.name}",
                               timeout=max(120.0, 10.0 * s.seconds))
            phase_name = f"{self.name}-{i}"
            self.snapshot(phase_name)
            phase = self.results().phase(phase_name)
            now = pages_of(report)
            total, on_dram = interval_share(phase, [prev, now], self.dram)
            hot = hot_set(s, i)
            hot_pages = [p for k, p in now.items() if k[0] == hot]
            moved_now = [k for k, p in now.items()
                         if prev.get(k) is not None and prev[k].node == self.source
                         and p.node in self.dram]
            moves += [(i, k[0], k[1]) for k in moved_now]
            record: dict[str, Any] = {
                "i": i, "t_s": i * s.seconds, "phase": phase_name, "hot": hot,
                "accesses": total,
                "dram_share": on_dram / total if total else None,
                "hot_on_dram": (sum(1 for p in hot_pages if p.node in self.dram)
                                / len(hot_pages)) if hot_pages else 0.0,
                "moved": len(moved_now),
            }
            if s.policy in ("move_phys_pages", "move_pages") and i < s.intervals:
                record["policy"] = self._promote(phase, now, pid)
                user_ns += record["policy"]["ns"]
            intervals.append(record)
            prev, last = now, report
        vm1 = self._vmstat()
        changes = {k: (b - a if a is not None and b is not None else None)
                   for k in VMSTAT for a, b in [(vm0[k], vm1[k])]}
        stopped = self._stop_policy()
        self._run(f"cxlrig-phase --next {self.name}", timeout=120.0)  # let it finish
        end_cpu = last.get("cpu") or {}
        sys_ms = (int(end_cpu.get("sys_us", 0)) - int(start_cpu.get("sys_us", 0))) / 1000.0
        user_ms = (int(end_cpu.get("user_us", 0)) - int(start_cpu.get("user_us", 0))) / 1000.0
        summary = summarize(s, intervals, moves)
        if s.policy in ("move_phys_pages", "move_pages"):
            policy_ms: float | None = user_ns / 1e6
            policy_cpu = "the move calls (move_phys_pages or move_pages), in the guest kernel"
        elif s.policy == "damon":
            policy_ms = 1000.0 * int(stopped.get("cpu_ticks", 0)) / USER_HZ
            policy_cpu = "the kdamond thread (user + system, 10 ms ticks)"
        elif s.policy == "numa_balancing":
            policy_ms = sys_ms
            policy_cpu = ("the workload's own system time: scanning and hint faults run in "
                          "its context (compare with the none policy's)")
        else:
            policy_ms = 0.0
            policy_cpu = "no policy"
        data: dict[str, Any] = {
            "policy": s.policy,
            "workload": {"hot_pages": s.hot_pages, "cold_pages": s.cold_pages,
                         "ratio": s.ratio, "cold_ms": s.cold_ms,
                         "intervals": s.intervals, "seconds": s.seconds,
                         "swap_at": s.swap_at, "source_node": self.source,
                         "target_node": self.target, "pid": pid, "cpu": self.cpu},
            "intervals": intervals,
            "final_dram_share": summary.final_dram_share,
            "final_hot_on_dram": intervals[-1]["hot_on_dram"] if intervals else None,
            "time_to_90_s": summary.time_to_90_s,
            "moved_pages": summary.moved,
            "moved_hot_pages": summary.moved_hot,
            "precision": summary.precision,
            "recall": summary.recall,
            "vmstat": changes,
            "pages_migrated": changes["pgmigrate_success"],
            "policy_cpu_ms": policy_ms,
            "policy_cpu": policy_cpu,
            "workload_sys_ms": sys_ms,
            "workload_user_ms": user_ms,
            "policy_start": policy,
            "policy_stop": stopped,
            "phases": [iv["phase"] for iv in intervals],
            "start_phase": f"{self.name}-start",
        }
        return Step(id=self.st.id or "", kind="tiering", command="\n".join(self.commands),
                    status=0, seconds=time.monotonic() - started, data=data)
