"""Putting a finished build into the content-hash cache, atomically."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def publish(staging: Path, final: Path, complete: Callable[[Path], bool]) -> None:
    """Rename the build in ``staging`` to ``final`` (same file system).

    A ``final`` already there (a forced rebuild, or a half-removed build) is
    moved aside first so the rename stays atomic. If another process
    published the same key meanwhile, its build is as good as ours, as long
    as ``complete`` says it is whole.
    """
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=".old-", dir=final.parent))
        final.rename(trash / final.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        staging.rename(final)
    except OSError:
        if not complete(final):
            raise
        log.debug("%s was built concurrently; using that build", final)
