"""Reports from a results directory: terminal table, HTML page with plots, JUnit XML.

Reports read only what the scenario runner left on disk, so a results
directory can be re-rendered at any time without QEMU. The submodules
``terminal``, ``html`` and ``junit`` are imported on demand (``html`` pulls in
matplotlib).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxlrig.results.model import (
    Access,
    Check,
    Mark,
    Measurement,
    NodeAccess,
    Phase,
    PluginData,
    Results,
    ResultsFormatError,
    Run,
    SeriesPoint,
    Step,
    Verdict,
    load_results,
    parse_results,
)


@dataclass(frozen=True)
class ReportFiles:
    results: Results
    junit: Path
    html: Path


def write_reports(results_dir: str | Path) -> ReportFiles:
    """JUnit XML and the HTML page of a results directory, from its results.json alone."""
    from cxlrig.report import html, junit

    results = load_results(results_dir)
    return ReportFiles(results, junit.write(results, results.directory / "junit.xml"),
                       html.render(results))


__all__ = [
    "Access",
    "Check",
    "Mark",
    "Measurement",
    "NodeAccess",
    "Phase",
    "PluginData",
    "ReportFiles",
    "Results",
    "ResultsFormatError",
    "Run",
    "SeriesPoint",
    "Step",
    "Verdict",
    "load_results",
    "parse_results",
    "write_reports",
]
