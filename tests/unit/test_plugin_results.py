# The plugin's own lines are kept verbatim below, however long.
# ruff: noqa: E501
"""Reading the plugin's output: real files it wrote, then damaged copies of them.

EXACT and SAMPLED were written by the plugin itself (QEMU 10.0.2, firmware
only, topologies/default.yaml, two vCPUs, single-threaded TCG): started
paused with node 0 only, then ``add``-ed node 1 and a ``region=`` laid over
DRAM (so that device counts are non-zero without a guest kernel) over the
control socket, QMP ``cont``, ``snapshot firmware`` one second later, QMP
``quit`` half a second after that. Their ``args`` and ``added`` show the
rest; SAMPLED adds ``sample=8``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cxlrig.plugin.results import ResultsError, load, loads, parse

EXACT = r"""{
  "format": 1,
  "plugin": "cxlrig-mem",
  "version": "1.0.0",
  "api_version": 4,
  "status": "exited",
  "args": ["out=/tmp/mt/20261126-014258-cap-_xdf7gyr/plugin.json", "node=0:0x0:0x100000", "lat=0:90:100", "pages_top=3", "interval=2000000", "interval_unit=insn", "control=/tmp/cap-ctl.sock"],
  "added": ["node=1:0x100000:0x40000000", "region=dram2:0x0:0x20000000:2:4096:even+odd", "lat=1:250:300"],
  "sample": 1,
  "page_size": 4096,
  "pages": true,
  "pages_top": 3,
  "tick_insns": 65536,
  "clock": {"insns": 6589701, "ns": 1805138222},
  "delay": {"enabled": false, "slept_ns": 0},
  "bad_index": 0,
  "interval": {"n": 2000000, "unit": "insn"},
  "nodes": [
    {"id": 0, "ranges": [[0, 1048576]], "read_ns": 90, "write_ns": 100},
    {"id": 1, "ranges": [[1048576, 1073741824]], "read_ns": 250, "write_ns": 300}
  ],
  "regions": [
    {"name": "dram2", "base": 0, "size": 536870912, "ways": 2, "granularity": 4096, "devices": ["even", "odd"]}
  ],
  "totals": {
    "insns": 6589701,
    "nodes": {"0": {"reads": 368175, "writes": 1182235, "modelled_ns": 151359250}, "1": {"reads": 183624, "writes": 130434, "modelled_ns": 85036200}},
    "regions": {"dram2": {"reads": 368175, "writes": 1182235}},
    "devices": {"even": {"reads": 271163, "writes": 639568}, "odd": {"reads": 97012, "writes": 542667}},
    "unmatched": {"ram": {"reads": 190272, "writes": 0}, "io": {"reads": 1771, "writes": 307}, "unknown": {"reads": 0, "writes": 0}}
  },
  "phases": [
    {"name": "firmware", "index": 0,
     "start": {"insns": 0, "ns": 0}, "end": {"insns": 6584121, "ns": 1300317123}, "insns": 6584121, "delay_ns": 0,
     "nodes": {"0": {"reads": 366843, "writes": 1180975, "modelled_ns": 151113370}, "1": {"reads": 183624, "writes": 130434, "modelled_ns": 85036200}},
     "regions": {"dram2": {"reads": 366843, "writes": 1180975}},
     "devices": {"even": {"reads": 269831, "writes": 638308}, "odd": {"reads": 97012, "writes": 542667}},
     "unmatched": {"ram": {"reads": 190272, "writes": 0}, "io": {"reads": 1771, "writes": 307}, "unknown": {"reads": 0, "writes": 0}},
     "pages_touched": 245, "pages": [
      {"pa": 24576, "node": 0, "reads": 110219, "writes": 94638, "last": 6553757},
      {"pa": 1056870400, "node": 1, "reads": 66115, "writes": 5245, "last": 3342421},
      {"pa": 1056874496, "node": 1, "reads": 44129, "writes": 3718, "last": 3735646}
     ]},
    {"name": null, "index": 1,
     "start": {"insns": 6584121, "ns": 1300317123}, "end": {"insns": 6589701, "ns": 1805138222}, "insns": 5580, "delay_ns": 0,
     "nodes": {"0": {"reads": 1332, "writes": 1260, "modelled_ns": 245880}, "1": {"reads": 0, "writes": 0, "modelled_ns": 0}},
     "regions": {"dram2": {"reads": 1332, "writes": 1260}},
     "devices": {"even": {"reads": 1332, "writes": 1260}, "odd": {"reads": 0, "writes": 0}},
     "unmatched": {"ram": {"reads": 0, "writes": 0}, "io": {"reads": 0, "writes": 0}, "unknown": {"reads": 0, "writes": 0}},
     "pages_touched": 5, "pages": [
      {"pa": 950272, "node": 0, "reads": 486, "writes": 828, "last": 6553757},
      {"pa": 24576, "node": 0, "reads": 513, "writes": 423, "last": 6553757},
      {"pa": 1007616, "node": 0, "reads": 306, "writes": 0, "last": 6553757}
     ]}
  ],
  "series": [
    {"insns": 2031664, "ns": 444165031, "phase": 0, "nodes": {"0": {"reads": 239936, "writes": 420276}, "1": {"reads": 101513, "writes": 99131}}},
    {"insns": 4063332, "ns": 472706021, "phase": 0, "nodes": {"0": {"reads": 122442, "writes": 257729}, "1": {"reads": 82111, "writes": 31303}}},
    {"insns": 6029457, "ns": 480486562, "phase": 0, "nodes": {"0": {"reads": 0, "writes": 393225}, "1": {"reads": 0, "writes": 0}}}
  ]
}
"""

SAMPLED = r"""{
  "format": 1,
  "plugin": "cxlrig-mem",
  "version": "1.0.0",
  "api_version": 4,
  "status": "exited",
  "args": ["out=/tmp/mt/20261126-014300-cap-5pb9musk/plugin.json", "node=0:0x0:0x100000", "lat=0:90:100", "pages_top=3", "sample=8", "interval=2000000", "interval_unit=insn", "control=/tmp/cap-ctl.sock"],
  "added": ["node=1:0x100000:0x40000000", "region=dram2:0x0:0x20000000:2:4096:even+odd", "lat=1:250:300"],
  "sample": 8,
  "page_size": 4096,
  "pages": true,
  "pages_top": 3,
  "tick_insns": 65536,
  "clock": {"insns": 6590783, "ns": 1548336197},
  "delay": {"enabled": false, "slept_ns": 0},
  "bad_index": 0,
  "interval": {"n": 2000000, "unit": "insn"},
  "nodes": [
    {"id": 0, "ranges": [[0, 1048576]], "read_ns": 90, "write_ns": 100},
    {"id": 1, "ranges": [[1048576, 1073741824]], "read_ns": 250, "write_ns": 300}
  ],
  "regions": [
    {"name": "dram2", "base": 0, "size": 536870912, "ways": 2, "granularity": 4096, "devices": ["even", "odd"]}
  ],
  "totals": {
    "insns": 6590783,
    "nodes": {"0": {"reads": 370696, "writes": 1180776, "modelled_ns": 151440240}, "1": {"reads": 182864, "writes": 130384, "modelled_ns": 84831200}},
    "regions": {"dram2": {"reads": 370696, "writes": 1180776}},
    "devices": {"even": {"reads": 273464, "writes": 638288}, "odd": {"reads": 97232, "writes": 542488}},
    "unmatched": {"ram": {"reads": 191016, "writes": 0}, "io": {"reads": 1872, "writes": 320}, "unknown": {"reads": 0, "writes": 0}}
  },
  "phases": [
    {"name": "firmware", "index": 0,
     "start": {"insns": 0, "ns": 0}, "end": {"insns": 6584583, "ns": 1042571420}, "insns": 6584583, "delay_ns": 0,
     "nodes": {"0": {"reads": 369136, "writes": 1179384, "modelled_ns": 151160640}, "1": {"reads": 182864, "writes": 130384, "modelled_ns": 84831200}},
     "regions": {"dram2": {"reads": 369136, "writes": 1179384}},
     "devices": {"even": {"reads": 271904, "writes": 636896}, "odd": {"reads": 97232, "writes": 542488}},
     "unmatched": {"ram": {"reads": 191016, "writes": 0}, "io": {"reads": 1872, "writes": 320}, "unknown": {"reads": 0, "writes": 0}},
     "pages_touched": 245, "pages": [
      {"pa": 24576, "node": 0, "reads": 111384, "writes": 93776, "last": 6553752},
      {"pa": 1056870400, "node": 1, "reads": 66232, "writes": 5168, "last": 2621507},
      {"pa": 1056874496, "node": 1, "reads": 43968, "writes": 3800, "last": 3342418}
     ]},
    {"name": null, "index": 1,
     "start": {"insns": 6584583, "ns": 1042571420}, "end": {"insns": 6590783, "ns": 1548336197}, "insns": 6200, "delay_ns": 0,
     "nodes": {"0": {"reads": 1560, "writes": 1392, "modelled_ns": 279600}, "1": {"reads": 0, "writes": 0, "modelled_ns": 0}},
     "regions": {"dram2": {"reads": 1560, "writes": 1392}},
     "devices": {"even": {"reads": 1560, "writes": 1392}, "odd": {"reads": 0, "writes": 0}},
     "unmatched": {"ram": {"reads": 0, "writes": 0}, "io": {"reads": 0, "writes": 0}, "unknown": {"reads": 0, "writes": 0}},
     "pages_touched": 4, "pages": [
      {"pa": 950272, "node": 0, "reads": 592, "writes": 928, "last": 6553752},
      {"pa": 24576, "node": 0, "reads": 552, "writes": 448, "last": 6553752},
      {"pa": 1007616, "node": 0, "reads": 392, "writes": 0, "last": 6553752}
     ]}
  ],
  "series": [
    {"insns": 2031664, "ns": 121415214, "phase": 0, "nodes": {"0": {"reads": 240808, "writes": 418416}, "1": {"reads": 101080, "writes": 99344}}},
    {"insns": 4063327, "ns": 141830819, "phase": 0, "nodes": {"0": {"reads": 123544, "writes": 257768}, "1": {"reads": 81784, "writes": 31040}}},
    {"insns": 6029452, "ns": 145681916, "phase": 0, "nodes": {"0": {"reads": 0, "writes": 392608}, "1": {"reads": 0, "writes": 0}}}
  ]
}
"""


def test_exact_output() -> None:
    r = loads(EXACT)
    assert r.exited and not r.sampled and r.sample == 1
    assert r.version == "1.0.0" and r.page_size == 4096 and r.pages_top == 3
    assert r.args[1:3] == ("node=0:0x0:0x100000", "lat=0:90:100")
    assert r.added == ("node=1:0x100000:0x40000000", "region=dram2:0x0:0x20000000:2:4096:even+odd",
                       "lat=1:250:300")
    assert r.interval == 2000000 and r.interval_unit == "insn"
    assert [(n.id, n.ranges, n.read_ns, n.write_ns) for n in r.nodes] == [
        (0, ((0, 0x100000),), 90, 100), (1, ((0x100000, 0x40000000),), 250, 300)]
    assert r.regions[0].devices == ("even", "odd") and r.regions[0].granularity == 4096
    assert [p.name for p in r.phases] == ["firmware", None]
    assert [p.name for p in r.named_phases] == ["firmware"]
    fw = r.phase("firmware")
    assert fw.index == 0 and fw.start_insns == 0 and fw.end_insns == fw.insns > 0
    assert r.phases[1].start_insns == fw.end_insns
    assert r.phases[1].end_insns == r.clock_insns == r.totals.insns


def test_phases_add_up_to_the_totals() -> None:
    r = loads(EXACT)
    for n, c in r.totals.nodes.items():
        assert sum(p.nodes[n].reads for p in r.phases) == c.reads
        assert sum(p.nodes[n].writes for p in r.phases) == c.writes
    for d, c in r.totals.devices.items():
        assert sum(p.devices[d].total for p in r.phases) == c.total
    assert sum(p.accesses for p in r.phases) == r.totals.accesses
    assert sum(p.insns for p in r.phases) == r.totals.insns
    # The region covers node 0 and part of node 1; its devices share it.
    reg = r.totals.regions["dram2"]
    assert reg.total == sum(c.total for c in r.totals.devices.values())


def test_counts_derived_values() -> None:
    r = loads(EXACT)
    fw = r.phase("firmware")
    n0 = fw.nodes[0]
    assert n0.modelled_ns == n0.reads * 90 + n0.writes * 100
    assert fw.modelled_ns() == n0.modelled_ns + (fw.nodes[1].modelled_ns or 0)
    share = fw.dram_share({0})
    assert share is not None and 0 < share < 1
    assert fw.share({0, 1}) == 1.0
    assert fw.accesses == fw.node_accesses + fw.unmatched.total
    assert fw.unmatched.ram.total > 0  # the BIOS ROM at the top of 4 GiB


def test_pages_are_most_accessed_first() -> None:
    r = loads(EXACT)
    fw = r.phase("firmware")
    assert fw.pages_touched == 245 and len(fw.pages) == 3
    totals = [p.total for p in fw.pages]
    assert totals == sorted(totals, reverse=True)
    assert fw.top_pages(1)[0].pa == 24576
    assert [p.node for p in fw.top_pages(5, node=1)] == [1, 1]
    assert all(p.last <= r.clock_insns for p in fw.pages)


def test_series_points() -> None:
    r = loads(EXACT)
    assert len(r.series) == 3
    insns = [p.insns for p in r.series]
    assert insns == sorted(insns) and insns[0] >= r.interval
    assert all(p.phase == 0 for p in r.series)
    assert sum(p.nodes[0].total for p in r.series) <= r.totals.nodes[0].total


def test_sampled_output_is_scaled() -> None:
    r = loads(SAMPLED)
    assert r.sampled and r.sample == 8
    assert all(c.reads % 8 == 0 and c.writes % 8 == 0 for c in r.totals.nodes.values())
    exact = loads(EXACT)
    # The same firmware run: the estimate lands within a few percent.
    assert abs(r.totals.node_accesses / exact.totals.node_accesses - 1) < 0.05


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "plugin.json"
    path.write_text(EXACT)
    assert load(path).totals == loads(EXACT).totals
    with pytest.raises(ResultsError, match="cannot read"):
        load(tmp_path / "missing.json")


def _damaged(change: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXACT)
    data = copy.deepcopy(data)
    if change == "format":
        data["format"] = 2
    elif change == "version":
        data["version"] = 1
    elif change == "missing":
        del data["totals"]["unmatched"]["io"]
    elif change == "type":
        data["phases"][0]["pages"][1]["reads"] = "many"
    elif change == "node-key":
        data["series"][0]["nodes"]["zero"] = {"reads": 0, "writes": 0}
    return data


@pytest.mark.parametrize("change, message", [
    ("format", "format: 2 is not the supported format 1 (plugin and orchestrator out of step?)"),
    ("missing", "totals.unmatched.io: missing"),
    ("version", "version: expected a string, got 1"),
    ("type", "phases[0].pages[1].reads: expected an integer, got 'many'"),
    ("node-key", "series[0]: node key 'zero' is not a number"),
])
def test_damaged_output_names_the_key(change: str, message: str) -> None:
    with pytest.raises(ResultsError) as err:
        parse(_damaged(change), "x.json")
    assert str(err.value) == f"x.json: {message}"


def test_not_json() -> None:
    with pytest.raises(ResultsError, match=r"x\.json: not JSON"):
        loads(EXACT[:-20], "x.json")
