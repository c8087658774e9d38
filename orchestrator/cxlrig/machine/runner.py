"""The QEMU process: launch, QMP, console socket, graceful then hard shutdown.

A :class:`Machine` is a context manager with explicit steps, like QEMU's own
``QEMUMachine``: ``launch()`` builds the argv (through the pure builder),
starts QEMU with no shell and ``stdin=DEVNULL``, connects QMP; ``shutdown()``
asks QMP ``quit``, waits, then SIGTERM, then SIGKILL, always in ``finally``.

No QEMU may outlive its orchestrator: QEMU is started in its own session
(so a terminal's Ctrl-C reaches only us, and we shut it down in order) with
``PR_SET_PDEATHSIG`` set to SIGKILL, so even a SIGKILLed orchestrator takes
its QEMU with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from cxlrig.errors import CxlrigError
from cxlrig.machine.qmp import Qmp, QmpError
from cxlrig.qemu.args import QemuOptions, build_argv, format_argv
from cxlrig.qemu.firmware import cdat_tables
from cxlrig.timeouts import TIMEOUTS
from cxlrig.topology.model import Topology

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class MachineError(CxlrigError):
    """QEMU could not be started, or died, or would not stop."""


class LaunchError(MachineError):
    """QEMU did not come up. Carries its exit code, command and output."""

    def __init__(self, msg: str, *, exitcode: int | None, argv: list[str], output: str) -> None:
        detail = f"{msg}\n  exit code: {exitcode}\n  command: {shlex.join(argv)}"
        if output.strip():
            tail = "\n".join("    " + line for line in output.strip().splitlines()[-20:])
            detail += f"\n  QEMU said:\n{tail}"
        super().__init__(detail)
        self.exitcode = exitcode
        self.argv = argv
        self.output = output


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Runs in the child between fork and exec: get ``sig`` when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


@dataclass(frozen=True)
class RunDir:
    """A run's directory: argv, logs, resolved topology; kept for the user."""

    path: Path

    @classmethod
    def create(cls, root: Path, label: str) -> RunDir:
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(tempfile.mkdtemp(prefix=f"{stamp}-{label}-", dir=root))
        return cls(path)

    @property
    def qemu_log(self) -> Path:
        return self.path / "qemu.log"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def shell_log(self) -> Path:
        return self.path / "shell.log"

    @property
    def argv_file(self) -> Path:
        return self.path / "argv.sh"

    @property
    def topology_file(self) -> Path:
        return self.path / "topology.json"

    @property
    def pid_file(self) -> Path:
        return self.path / "qemu.pid"


class Machine:
    """One QEMU machine for one topology, used as a context manager."""

    def __init__(self, topo: Topology, options: QemuOptions, run_dir: RunDir, *,
                 argv_hook: Callable[[list[str]], list[str]] | None = None) -> None:
        self.topo = topo
        self.run_dir = run_dir
        self._options = options
        self._argv_hook = argv_hook
        self._sockdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: Qmp | None = None
        self._logfile: Any = None
        self.argv: list[str] = []
        self.exitcode: int | None = None

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> Machine:
        self.launch()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def shell_socket(self) -> Path:
        assert self._sockdir is not None, "machine not launched"
        return self._sockdir / "shell.sock"

    def launch(self) -> None:
        """Start QEMU and connect QMP; on any failure, leave nothing running."""
        try:
            self._pre_launch()
            self._launch()
            self._post_launch()
        except BaseException:
            self.shutdown()
            raise

    def _pre_launch(self) -> None:
        # UNIX socket paths are limited to 108 bytes: keep them in a short
        # private directory rather than in the (possibly deep) run directory.
        self._sockdir = Path(tempfile.mkdtemp(prefix="cxlrig-"))
        for device, table in cdat_tables(self.topo).items():
            (self.run_dir.path / f"{device}.cdat").write_bytes(table)
        opts = replace(self._options, qmp_socket=self._sockdir / "qmp.sock",
                       console_log=self.run_dir.console_log,
                       shell_socket=self._sockdir / "shell.sock",
                       shell_log=self.run_dir.shell_log, cdat_dir=self.run_dir.path)
        self._options = opts
        argv = build_argv(self.topo, opts)
        self.argv = self._argv_hook(argv) if self._argv_hook else argv
        self.run_dir.argv_file.write_text("#!/bin/sh\nexec " + format_argv(self.argv))
        self.run_dir.topology_file.write_text(json.dumps(asdict(self.topo), indent=2) + "\n")

    def _launch(self) -> None:
        log.info("starting QEMU: %s", shlex.join(self.argv))
        if shutil.which(self.argv[0]) is None:
            raise LaunchError(f"{self.argv[0]} not found (run 'make setup')", exitcode=None,
                              argv=self.argv, output="")
        self._logfile = open(self.run_dir.qemu_log, "wb")  # noqa: SIM115 (closed in shutdown)
        self._proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._logfile,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=set_pdeathsig)
        self.run_dir.pid_file.write_text(f"{self._proc.pid}\n")

    def _post_launch(self) -> None:
        assert self._proc is not None and self._sockdir is not None
        qmp_path = self._sockdir / "qmp.sock"
        deadline = time.monotonic() + TIMEOUTS.qemu_start
        while not qmp_path.exists():
            if self._proc.poll() is not None:
                raise self._launch_error("QEMU exited during start-up")
            if time.monotonic() > deadline:
                raise self._launch_error(
                    f"QEMU's QMP socket did not appear within {TIMEOUTS.qemu_start:.0f} s")
            time.sleep(0.02)
        # QEMU creates the socket file (bind) a moment before it listens: a
        # refused connection then is a race, not a failure (seen on a busy host).
        while True:
            qmp = Qmp(self.topo.name)
            try:
                qmp.connect(str(qmp_path), max(1.0, deadline - time.monotonic()))
            except QmpError as exc:
                qmp.close()
                if (self._proc.poll() is None and time.monotonic() < deadline
                        and "refused" in str(exc).lower()):
                    time.sleep(0.05)
                    continue
                raise self._launch_error(str(exc)) from exc
            break
        self._qmp = qmp

    def _launch_error(self, msg: str) -> LaunchError:
        code = None
        if self._proc is not None:
            # QEMU opens its QMP socket before it parses every device: a bad
            # option shows first as a dropped QMP session, then as its exit.
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._proc.wait(2)
        return LaunchError(msg, exitcode=code, argv=self.argv, output=self.qemu_output())

    def qemu_output(self) -> str:
        try:
            return self.run_dir.qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def shutdown(self, timeout: float | None = None) -> int | None:
        """Stop QEMU: QMP quit, wait; SIGTERM, wait; SIGKILL. Idempotent."""
        proc, qmp = self._proc, self._qmp
        self._qmp = None
        try:
            if proc is not None and proc.poll() is None:
                if qmp is not None:
                    with contextlib.suppress(QmpError):
                        qmp.execute("quit", timeout=5)
                self._wait_or(proc, timeout or TIMEOUTS.qemu_quit, signal.SIGTERM)
                self._wait_or(proc, TIMEOUTS.qemu_term, signal.SIGKILL)
                proc.wait()
        finally:
            if qmp is not None:
                qmp.close()
            if self._logfile is not None:
                self._logfile.close()
                self._logfile = None
            if self._sockdir is not None:
                shutil.rmtree(self._sockdir, ignore_errors=True)
                self._sockdir = None
        if proc is not None:
            self.exitcode = proc.returncode
        return self.exitcode

    @staticmethod
    def _wait_or(proc: subprocess.Popen[bytes], timeout: float, sig: signal.Signals) -> None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("QEMU (pid %d) still running after %.0f s: sending %s",
                        proc.pid, timeout, sig.name)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    # -- talking to it -----------------------------------------------------------

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for QEMU to exit by itself (guest poweroff)."""
        assert self._proc is not None
        return self._proc.wait(timeout)

    def cdat_file(self, device: str) -> Path | None:
        """The CDAT file written for ``device`` before launch, if the topology gives it one."""
        path = self.run_dir.path / f"{device}.cdat"
        return path if path.is_file() else None

    def qmp(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        if self._qmp is None:
            raise MachineError(f"QMP {cmd}: the machine is not running")
        return self._qmp.execute(cmd, args, TIMEOUTS.qmp_command)

    def hmp(self, command: str) -> str:
        if self._qmp is None:
            raise MachineError(f"HMP {command}: the machine is not running")
        return self._qmp.hmp(command, TIMEOUTS.qmp_command)

    def connect_shell(self) -> socket.socket:
        """A connected stream socket to the guest shell's serial port (ttyS1)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.shell_socket))
        return sock
