"""The TAP the kernel's selftests print, read into one result per case."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cxlrig.scenario.tap import parse

# What migration.c printed in a 4-vCPU guest without huge pages reserved.
MIGRATION = """TAP version 13
1..6
# Starting 6 tests from 1 test cases.
#  RUN           migration.private_anon ...
#            OK  migration.private_anon
ok 1 migration.private_anon
#  RUN           migration.shared_anon ...
#            OK  migration.shared_anon
ok 2 migration.shared_anon
ok 3 migration.private_anon_thp # SKIP Not enough threads or NUMA nodes available
ok 4 migration.shared_anon_thp
#  RUN           migration.private_anon_htlb ...
#          FAIL  migration.private_anon_htlb
not ok 5 migration.private_anon_htlb
#  RUN           migration.shared_anon_htlb ...
#          FAIL  migration.shared_anon_htlb
not ok 6 migration.shared_anon_htlb
# FAILED: 4 / 6 tests passed.
# Totals: pass:3 fail:2 xfail:0 xpass:0 skip:1 error:0
"""
STDERR = """# migration.c:268:private_anon_htlb:Expected ptr (18446744073709551615) != MAP_FAILED
# private_anon_htlb: Test terminated by assertion
# migration.c:294:shared_anon_htlb:Expected ptr (18446744073709551615) != MAP_FAILED
"""


def test_every_case_with_its_result() -> None:
    tap = parse(MIGRATION, STDERR)
    assert tap.plan == 6 and tap.missing == () and tap.bailed is None
    assert [(c.number, c.name, c.result) for c in tap.cases] == [
        (1, "migration.private_anon", "ok"), (2, "migration.shared_anon", "ok"),
        (3, "migration.private_anon_thp", "skip"), (4, "migration.shared_anon_thp", "ok"),
        (5, "migration.private_anon_htlb", "not ok"),
        (6, "migration.shared_anon_htlb", "not ok")]
    assert tap.cases[2].detail == "Not enough threads or NUMA nodes available"


def test_a_failure_carries_the_assertion_that_named_it() -> None:
    tap = parse(MIGRATION, STDERR)
    first, second = tap.failed
    assert first.detail.splitlines() == [
        "migration.c:268:private_anon_htlb:Expected ptr (18446744073709551615) != MAP_FAILED",
        "private_anon_htlb: Test terminated by assertion"]
    assert second.detail.startswith("migration.c:294:shared_anon_htlb:")


def test_without_stderr_the_notes_before_the_line_are_the_detail() -> None:
    out = "1..1\n# RUN  t.a ...\n# mmap: Cannot allocate memory\nnot ok 1 t.a\n"
    assert parse(out).cases[0].detail == "mmap: Cannot allocate memory"


def test_a_crash_leaves_the_rest_of_the_plan_missing() -> None:
    tap = parse("TAP version 13\n1..4\nok 1 a\nok 2 b\n")
    assert tap.missing == (3, 4)


def test_bail_out_stops_reading() -> None:
    tap = parse("1..3\nok 1 a\nBail out! no NUMA\nok 2 b\n")
    assert tap.bailed == "no NUMA" and [c.name for c in tap.cases] == ["a"]
    assert tap.missing == (2, 3)


def test_subtests_and_todo() -> None:
    out = ("KTAP version 1\n1..2\n    KTAP version 1\n    1..1\n    not ok 1 inner\n"
           "not ok 1 outer # TODO known\nok 2 - dashed name\n")
    tap = parse(out)
    assert [(c.name, c.result) for c in tap.cases] == [("outer", "xfail"),
                                                       ("dashed name", "ok")]


def test_no_tap_at_all() -> None:
    tap = parse("Segmentation fault\n")
    assert tap.plan is None and tap.cases == () and tap.missing == ()


@given(st.text(max_size=400))
def test_any_output_parses(text: str) -> None:
    tap = parse(text, text)
    assert all(c.result in ("ok", "not ok", "skip", "xfail") for c in tap.cases)
