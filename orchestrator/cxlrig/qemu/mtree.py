"""QEMU's flat memory tree (HMP ``info mtree -f``), parsed once, in one place.

What the machine room reads from a running QEMU and what the plugin counts
by both come from here: the DRAM ranges of each NUMA node and the
guest-physical ranges of the CXL fixed memory windows. Pure: text in,
frozen data out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cxlrig.errors import ProblemsError


class MemoryTreeError(ProblemsError):
    """The memory tree is not what QEMU prints, or its DRAM ranges overlap."""


@dataclass(frozen=True)
class NodeRange:
    """Guest-physical ``[start, end)`` belonging to NUMA node ``node``."""

    node: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def __contains__(self, pa: object) -> bool:
        return isinstance(pa, int) and self.start <= pa < self.end

    def __str__(self) -> str:
        return f"node {self.node} [{self.start:#x}, {self.end:#x})"


def overlaps(items: list[tuple[int, int, str]]) -> list[str]:
    """Each item of ``(start, end, what)`` that overlaps an earlier one, as a sentence."""
    out = []
    reach, holder = -1, ""  # the furthest end so far, and whose it is
    for start, end, what in sorted(items):
        if start < reach:
            out.append(f"{what} overlaps {holder}")
        if end > reach:
            reach, holder = end, what
    return out


@dataclass(frozen=True)
class MemoryLayout:
    """What ``info mtree -f`` shows of the system address space."""

    #: DRAM per NUMA node, merged per backend (see :func:`parse_mtree`).
    dram: tuple[NodeRange, ...]
    #: CXL fixed memory windows ``(start, end)``, in address order, which is
    #: the order of the topology's windows.
    windows: tuple[tuple[int, int], ...]


_ROW = re.compile(r"^\s+([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ([^)]+)\): (\S+)"
                  r"(?: @([0-9a-f]+))?")
_RAM_NODE = re.compile(r"ram-node(\d+)")
#: Below 1 MiB the PC's BIOS area sits over DRAM (PAM switches it between
#: ROM and the RAM underneath); gaps there are bridged, nowhere else.
_LEGACY_END = 0x100000


def _default_backend_node(name: str) -> int | None:
    m = _RAM_NODE.fullmatch(name)
    if m:
        return int(m.group(1))
    return 0 if name == "pc.ram" else None


def parse_mtree(text: str, backends: Mapping[str, int] | None = None) -> MemoryLayout:
    """DRAM node ranges and CXL windows from HMP ``info mtree -f``.

    Only the flat view of the ``memory`` address space counts. A RAM row
    belongs to a node through its backend name (``ram-nodeN``, the ids the
    argument builder gives; ``pc.ram`` is node 0; ``backends`` overrides).
    Rows of one backend that map it linearly (same address minus offset) are
    merged across the legacy BIOS hole below 1 MiB, which is that node's DRAM
    shadowed by ROM until the firmware switches it.
    """
    rows: list[tuple[int, int, str, str, int]] = []
    in_view = False
    for line in text.splitlines():
        if line.startswith("FlatView"):
            if rows:
                break
            in_view = False
            continue
        if line.strip() == 'AS "memory", root: system':
            in_view = True
            continue
        m = _ROW.match(line) if in_view else None
        if m:
            start, last = int(m.group(1), 16), int(m.group(2), 16)
            offset = int(m.group(5), 16) if m.group(5) else 0
            rows.append((start, last + 1, m.group(3), m.group(4), offset))
    if not rows:
        raise MemoryTreeError(["info mtree -f: no flat view of the 'memory' address space"])

    windows = tuple((s, e) for s, e, kind, name, _ in rows if name == "cxl-fixed-memory-region")
    spans: dict[tuple[str, int], list[list[int]]] = {}
    node_of: dict[str, int] = {}
    for start, end, kind, name, offset in sorted(rows):
        if kind != "ram":
            continue
        node = backends.get(name) if backends is not None else _default_backend_node(name)
        if node is None:
            continue
        node_of[name] = node
        runs = spans.setdefault((name, start - offset), [])
        if runs and (start <= runs[-1][1] or start <= _LEGACY_END):
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    dram = tuple(sorted((NodeRange(node_of[name], s, e)
                         for (name, _), runs in spans.items() for s, e in runs),
                        key=lambda r: r.start))
    problems = overlaps([(r.start, r.end, str(r)) for r in dram])
    if problems:
        raise MemoryTreeError([f"info mtree -f: {p}" for p in problems])
    return MemoryLayout(dram=dram, windows=windows)
