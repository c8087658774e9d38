"""Results: the typed contract between the scenario runner and every report.

:mod:`cxlrig.results.model` is the contract (frozen dataclasses and the
tolerant reader of ``results.json``); :mod:`cxlrig.results.writer` writes it
and generates its JSON Schema.
"""

from cxlrig.results.model import (
    READABLE_VERSIONS,
    RESULTS_FILE,
    VERSION,
    Access,
    Check,
    Mark,
    Measurement,
    NodeAccess,
    Phase,
    PluginData,
    Results,
    ResultsFile,
    ResultsFormatError,
    Run,
    SeriesPoint,
    Step,
    Verdict,
    load_results,
    parse_results,
)
from cxlrig.results.writer import ResultsWriter, json_schema, to_json_data

__all__ = [
    "READABLE_VERSIONS",
    "RESULTS_FILE",
    "VERSION",
    "Access",
    "Check",
    "Mark",
    "Measurement",
    "NodeAccess",
    "Phase",
    "PluginData",
    "Results",
    "ResultsFile",
    "ResultsFormatError",
    "ResultsWriter",
    "Run",
    "SeriesPoint",
    "Step",
    "Verdict",
    "json_schema",
    "load_results",
    "parse_results",
    "to_json_data",
]
