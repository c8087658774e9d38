"""Where cxlrig finds its data and keeps its caches and run directories."""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The checkout this package was imported from (orchestrator/cxlrig/paths.py -> ../../..).
_CHECKOUT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Where guest/, qemu-plugin/, topologies/, scenarios/ and docs/ are.

    ``$CXLRIG_ROOT`` if set; else the checkout this package runs from; else,
    for an installed wheel, ``<prefix>/share/cxlrig``, where the wheel puts
    them (pyproject's data-files).
    """
    env = os.environ.get("CXLRIG_ROOT")
    if env:
        return Path(env)
    if (_CHECKOUT / "guest" / "kernel").is_dir():
        return _CHECKOUT
    return Path(sys.prefix) / "share" / "cxlrig"


#: The data root as it was when cxlrig started (see :func:`data_root`).
DATA_ROOT = data_root()


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


def require_data(*parts: str) -> Path:
    """``DATA_ROOT/parts...``, or a message saying where it was looked for."""
    from cxlrig.errors import CxlrigError

    path = DATA_ROOT.joinpath(*parts)
    if not path.exists():
        raise CxlrigError(f"{path} is missing: cxlrig's data (guest/, qemu-plugin/, "
                          f"topologies/) is looked for under {DATA_ROOT}; set CXLRIG_ROOT to "
                          "a checkout of cxlrig or install its wheel")
    return path
