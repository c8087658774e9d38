"""Writing ``results.json``: one results directory per suite of scenario runs.

The file is rewritten (atomically) after every run, so an interrupted suite
keeps what it finished; reports read only this directory.
"""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from cxlrig import __version__
from cxlrig.files import write_atomic
from cxlrig.results.model import READABLE_VERSIONS, RESULTS_FILE, VERSION, ResultsFile, Run


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@cache
def _adapter() -> TypeAdapter[ResultsFile]:
    return TypeAdapter(ResultsFile)


def to_json_data(doc: ResultsFile) -> dict[str, Any]:
    """``doc`` as the JSON value ``results.json`` holds (node ids become string keys)."""
    data: dict[str, Any] = _adapter().dump_python(doc, mode="json")
    data.pop("directory", None)  # a Results read back: where it was read is not content
    return data


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``results.json``, generated from :class:`ResultsFile`."""
    schema: dict[str, Any] = _adapter().json_schema()
    schema["properties"]["version"] = {
        "enum": list(READABLE_VERSIONS), "title": "Version",
        "description": f"the format version; this cxlrig writes {VERSION}"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "cxlrig results.json",
            "description": "What a 'cxlrig run' produced: one entry per scenario and kernel "
                           "variant. Generated from cxlrig.results.model; do not edit.",
            **{k: v for k, v in schema.items() if k != "title"}}


class ResultsWriter:
    """Collects runs and keeps ``DIR/results.json`` up to date."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.started = _now()
        self.runs: list[Run] = []

    def add(self, run: Run) -> None:
        self.runs.append(run)
        self.write(finished=False)

    def document(self, finished: bool = True) -> ResultsFile:
        return ResultsFile(version=VERSION, runs=tuple(self.runs), started=self.started,
                           finished=_now() if finished else None, cxlrig=__version__)

    def write(self, finished: bool = True) -> Path:
        target = self.path / RESULTS_FILE
        text = json.dumps(to_json_data(self.document(finished)), indent=1) + "\n"
        write_atomic(target, text.encode())
        return target
