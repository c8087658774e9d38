"""Results on disk: one results directory per ``cxlrig run``.

``results.json`` is rewritten (atomically) after every scenario run, so an
interrupted run keeps what it finished; reports read only this directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cxlrig import __version__

VERSION = 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ResultsWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.started = _now()
        self.runs: list[dict[str, Any]] = []

    def add(self, run: dict[str, Any]) -> None:
        self.runs.append(run)
        self.write(finished=False)

    def write(self, finished: bool = True) -> Path:
        doc = {"version": VERSION, "started": self.started,
               "finished": _now() if finished else None, "cxlrig": __version__,
               "runs": self.runs}
        target = self.path / "results.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        os.replace(tmp, target)
        return target
