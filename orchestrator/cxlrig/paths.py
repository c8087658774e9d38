"""Where cxlrig keeps its caches and run directories."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (orchestrator/cxlrig/paths.py -> ../../..).
REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The content-hash cache: ``$CXLRIG_CACHE`` or ``~/.cache/cxlrig``."""
    env = os.environ.get("CXLRIG_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "cxlrig"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Where each run gets its own directory: ``$CXLRIG_RUNS`` or ``./runs``."""
    env = os.environ.get("CXLRIG_RUNS")
    return Path(env) if env else Path.cwd() / "runs"
