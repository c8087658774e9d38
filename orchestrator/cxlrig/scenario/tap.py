"""KTAP/TAP 13 as the kernel's selftests print it, read into one result per case.

What ``kselftest_harness.h`` writes::

    TAP version 13
    1..6
    #  RUN           migration.private_anon ...
    #            OK  migration.private_anon
    ok 1 migration.private_anon
    ok 3 migration.shared_anon # SKIP Not enough threads or NUMA nodes available
    not ok 5 migration.private_anon_htlb
    # Totals: pass:4 fail:1 xfail:0 xpass:0 skip:1 error:0

and on stderr the reason of a failed assertion,
``# migration.c:268:private_anon_htlb:Expected ptr (...) != MAP_FAILED (...)``.
Only the top level is read (KTAP subtests are indented and belong to their
parent's line). ``Bail out!`` ends the plan early: the cases not reported are
missing, which a run reports as failures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Result = Literal["ok", "not ok", "skip", "xfail"]

_RESULT = re.compile(r"^(not ok|ok)\s+(\d+)\b\s*(?:-\s*)?(.*?)\s*$")
_DIRECTIVE = re.compile(r"^(.*?)\s*#\s*(SKIP|TODO|XFAIL)\b\s*(.*)$", re.IGNORECASE)
_PLAN = re.compile(r"^1\.\.(\d+)\b")
_BAIL = re.compile(r"^Bail out!\s*(.*)$")
#: The harness's own progress notes, which say nothing about why.
_HARNESS_NOTE = re.compile(r"^(RUN|OK|FAIL)\s")


@dataclass(frozen=True)
class Case:
    number: int
    name: str
    result: Result
    #: The directive's text (the SKIP reason), or the failure's diagnostics.
    detail: str = ""


@dataclass(frozen=True)
class Tap:
    plan: int | None
    cases: tuple[Case, ...]
    bailed: str | None = None
    #: Numbers the plan announced that no line reported (a crash mid-way).
    missing: tuple[int, ...] = field(default=())

    @property
    def failed(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if c.result == "not ok")


def parse(stdout: str, stderr: str = "") -> Tap:
    """Read a selftest's TAP; diagnostics on stderr go to the case they name."""
    plan: int | None = None
    cases: list[Case] = []
    bailed: str | None = None
    notes: list[str] = []  # '#' lines since the last result: the next case's
    for raw in stdout.splitlines():
        if raw[:1].isspace():
            continue  # a subtest's line: its parent's result line says it all
        line = raw.strip()
        if m := _PLAN.match(line):
            if plan is None:
                plan = int(m.group(1))
            continue
        if m := _BAIL.match(line):
            bailed = m.group(1) or "bailed out"
            break
        if line.startswith("#"):
            notes.append(line.lstrip("#").strip())
            continue
        if m := _RESULT.match(line):
            word, number, rest = m.groups()
            result: Result = "ok" if word == "ok" else "not ok"
            name, detail = rest, ""
            if d := _DIRECTIVE.match(rest):
                name, directive, detail = d.group(1), d.group(2).upper(), d.group(3).strip()
                if directive == "SKIP":
                    result = "skip"
                elif directive in ("TODO", "XFAIL") and word == "not ok":
                    result = "xfail"
            if result == "not ok":
                detail = _diagnostics(name, notes, stderr)
            cases.append(Case(int(number), name.strip() or f"case {number}", result, detail))
            notes = []
    seen = {c.number for c in cases}
    missing = tuple(n for n in range(1, (plan or 0) + 1) if n not in seen)
    return Tap(plan, tuple(cases), bailed, missing)


def _diagnostics(name: str, notes: list[str], stderr: str) -> str:
    """What the test said about a failed case: its assertion lines, else its notes."""
    short = name.rsplit(".", 1)[-1]
    said = [line.lstrip("#").strip() for line in stderr.splitlines()
            if f":{short}:" in line or line.lstrip("# ").startswith(f"{short}:")]
    if not said:
        said = [n for n in notes if not _HARNESS_NOTE.match(n)]
    return "\n".join(said[-5:])
