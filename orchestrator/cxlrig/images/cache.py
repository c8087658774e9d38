"""Builds into the content-hash cache: keys, running make, publishing atomically."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cxlrig.errors import CxlrigError

log = logging.getLogger(__name__)


class BuildError(CxlrigError):
    """A build failed; the message holds the command and the tool's output,
    both also kept as attributes for callers that show them differently."""

    def __init__(self, message: str, *, command: list[str] | None = None,
                 output: str = "") -> None:
        super().__init__(message)
        self.command = command or []
        self.output = output


def digest(parts: Iterable[str | bytes]) -> str:
    """The SHA-256 of ``parts`` as one stream, each part length-prefixed so that
    no two different lists of parts hash the same."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@functools.cache
def toolchain_identity(compiler: str, *extra: Sequence[str]) -> str:
    """What a build's output depends on besides its sources: the compiler's
    version and target, and the output of each ``extra`` command (a C
    library's version, a pkg-config query). Raises OSError or
    subprocess.SubprocessError when one cannot run: the caller says which build
    needed it."""
    commands = [(compiler, "--version"), (compiler, "-dumpmachine"), *extra]
    out = [subprocess.run(list(c), capture_output=True, text=True, check=True, timeout=60,
                          stdin=subprocess.DEVNULL).stdout.strip() for c in commands]
    return "\n".join(out)


def run_make(command: list[str], *, what: str, error: type[BuildError],
             scrubbed_env: Iterable[str], timeout: float) -> str:
    """Run ``make`` for ``what`` ("the plugin"); its output, or ``error``.

    make imports the whole environment, so variables that would change the
    build behind the cache key's back are dropped, and the locale is fixed
    so compiler messages use plain ASCII quotes.
    """
    drop = set(scrubbed_env)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["LC_ALL"] = "C"
    log.info("building %s: %s", what, " ".join(command))
    shown = " ".join(command)
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, timeout=timeout,
                              check=False)
    except FileNotFoundError as exc:
        raise error(f"cannot run make: {exc}", command=command) from exc
    except subprocess.TimeoutExpired as exc:
        output = exc.output if isinstance(exc.output, str) else ""
        raise error(f"building {what} took longer than {timeout:.0f} s\n"
                    f"command: {shown}\n{output}", command=command, output=output) from exc
    if proc.returncode != 0:
        raise error(f"building {what} failed (make exited with {proc.returncode})\n"
                    f"command: {shown}\n{proc.stdout}", command=command, output=proc.stdout)
    return proc.stdout


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
