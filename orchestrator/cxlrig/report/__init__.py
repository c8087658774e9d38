"""Reports from a results directory: terminal table, HTML page with plots, JUnit XML.

Reports read only what the scenario runner left on disk, so a results
directory can be re-rendered at any time without QEMU. The submodules
``terminal``, ``html`` and ``junit`` are imported on demand (``html`` pulls in
matplotlib).
"""

from cxlrig.report.model import (
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

__all__ = [
    "Access",
    "Check",
    "Mark",
    "Measurement",
    "NodeAccess",
    "Phase",
    "PluginData",
    "Results",
    "ResultsFormatError",
    "Run",
    "SeriesPoint",
    "Step",
    "Verdict",
    "load_results",
    "parse_results",
]
