"""What every benchmark prints: medians with their spread, never a single run.

A figure is ``median [min-max] (n)``; a comparison of two configurations is
the median of the ratios of runs made side by side (same repetition), so a
slow spell of the host, which hits both, cancels instead of biasing one.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from cxlrig.cli import positive_int

#: Every benchmark repeats at least this often unless told otherwise.
DEFAULT_REPEAT = 3


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values to summarise")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def show(self, fmt: str = ".2f", unit: str = "") -> str:
        return (f"{self.median:{fmt}}{unit} [{self.low:{fmt}}-{self.high:{fmt}}] "
                f"(n={self.n})")


def paired_ratios(these: Sequence[float], base: Sequence[float]) -> Spread:
    """The ratio of each run to the base run of the same repetition."""
    if len(these) != len(base):
        raise ValueError(f"{len(these)} runs against {len(base)} base runs: not paired")
    return Spread.of([a / b for a, b in zip(these, base, strict=True)])


def paired_differences(these: Sequence[float], base: Sequence[float]) -> Spread:
    """The difference of each run to the base run of the same repetition."""
    if len(these) != len(base):
        raise ValueError(f"{len(these)} runs against {len(base)} base runs: not paired")
    return Spread.of([a - b for a, b in zip(these, base, strict=True)])


#: argparse type for --repeat: a whole number of at least 1.
repeat_arg = positive_int
