"""The tiering comparison's figures, computed from fixed reports and plugin phases."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cxlrig.plugin.results import Counts, PageCounts, Phase, Unmatched
from cxlrig.scenario.model import TieringSpec
from cxlrig.scenario.tiering import PageAt, hot_set, interval_share, pages_of, summarize

CXL, DRAM = 1, 0


def _report(nodes: dict[str, list[tuple[int, int]]]) -> dict[str, Any]:
    """A hotcold pause report: per set, each page's (pa, node)."""
    return {"sets": {name: {"pages": [{"i": i, "va": f"{0x7000 + i * 4096:#x}",
                                        "pa": f"{pa:#x}", "node": node}
                                       for i, (pa, node) in enumerate(pages)]}
                     for name, pages in nodes.items()}}


def _phase(counts: list[tuple[int, int, int]]) -> Phase:
    """A plugin phase with per-page (pa, node, accesses)."""
    return Phase(insns=0, nodes={}, regions={}, devices={},
                 unmatched=Unmatched(Counts(0, 0), Counts(0, 0), Counts(0, 0)), name="p",
                 pages=tuple(PageCounts(pa, node, n, 0, 0) for pa, node, n in counts))


def test_pages_of_reads_each_set_and_a_page_without_a_frame() -> None:
    report = _report({"hot": [(0x110000000, CXL)], "cold": [(0x1000, DRAM)]})
    report["sets"]["cold"]["pages"].append({"i": 1, "va": "0x9000", "pa": None, "node": None})
    pages = pages_of(report)
    assert pages[("hot", 0)] == PageAt("hot", 0, "0x7000", 0x110000000, CXL)
    assert pages[("cold", 0)] == PageAt("cold", 0, "0x7000", 0x1000, DRAM)
    assert pages[("cold", 1)] == PageAt("cold", 1, "0x9000", None, None)


def test_interval_share_counts_both_addresses_of_a_page_that_moved() -> None:
    before = pages_of(_report({"hot": [(0x110000000, CXL), (0x110001000, CXL)]}))
    after = pages_of(_report({"hot": [(0x5000, DRAM), (0x110001000, CXL)]}))
    phase = _phase([(0x110000000, CXL, 100), (0x5000, DRAM, 300), (0x110001000, CXL, 600),
                    (0x9000, DRAM, 10_000)])  # not the workload's: left out
    assert interval_share(phase, [before, after], {DRAM}) == (1000, 300)


def test_the_hot_set_is_the_cold_one_from_swap_at() -> None:
    spec = TieringSpec(policy="none", intervals=6, swap_at=4)
    assert [hot_set(spec, i) for i in range(1, 7)] == ["hot"] * 3 + ["cold"] * 3
    assert hot_set(TieringSpec(policy="none"), 10) == "hot"


def _intervals(hot_on_dram: list[float], seconds: int = 2) -> list[dict[str, Any]]:
    return [{"i": i, "t_s": i * seconds, "hot_on_dram": h, "dram_share": h}
            for i, h in enumerate(hot_on_dram, start=1)]


def test_summary_precision_recall_and_time_to_90() -> None:
    spec = TieringSpec(policy="numa_balancing", intervals=4, seconds=2, hot_pages=4)
    # Interval 2 moved three hot pages and one cold page, interval 3 the last hot one.
    moves = [(2, "hot", 0), (2, "hot", 1), (2, "hot", 2), (2, "cold", 7), (3, "hot", 3)]
    s = summarize(spec, _intervals([0.0, 0.75, 1.0, 1.0]), moves)
    assert s.time_to_90_s == 6
    assert s.moved == 5 and s.moved_hot == 4
    assert s.precision == pytest.approx(0.8)
    assert s.recall == 1.0
    assert s.final_dram_share == 1.0


def test_summary_after_the_hot_set_moved() -> None:
    spec = TieringSpec(policy="damon", intervals=6, seconds=2, swap_at=4, cold_pages=2)
    # The old hot set moved early (right then); after the swap only 1 of 2 new hot pages.
    moves = [(2, "hot", 0), (4, "cold", 0), (5, "hot", 1)]
    s = summarize(spec, _intervals([0, 1, 1, 0.5, 0.5, 0.95]), moves)
    assert s.time_to_90_s == 6  # three intervals after the move, not 12 s of run time
    assert s.precision == pytest.approx(2 / 3)  # the late move of an old hot page was not
    assert s.recall == 0.5


def test_nothing_moved_has_no_precision_and_never_reaches_90() -> None:
    spec = TieringSpec(policy="none", intervals=2)
    s = summarize(spec, _intervals([0.0, 0.0]), [])
    assert s.precision is None and s.recall == 0 and s.time_to_90_s is None


def test_swap_after_the_last_interval_is_refused() -> None:
    with pytest.raises(ValidationError, match="after the last interval"):
        TieringSpec(policy="none", intervals=4, swap_at=5)
