"""A shell in the guest, driven over its own serial port (ttyS1) with pexpect.

Each command travels base64-encoded into a file in the guest and runs under
``cxlrig_exec`` (guest/initramfs/cxlrig-exec), which prints the command's stdout, stderr
and exit status base64-encoded between markers that carry a fresh nonce.
The markers are assembled by the guest script, so the tty's echo of what we
typed can never match them, and nothing a command prints can either.

The kernel console (ttyS0) goes to a file: while waiting, the session reads
what is new there and turns a panic, Oops or BUG into an error, as it does a
QEMU that exits or a command that outlives its timeout.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import re
import secrets
import select
import socket
import sys
import termios
import time
import tty
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pexpect.fdpexpect

from cxlrig.errors import CheckFailed, CxlrigError
from cxlrig.machine.runner import Machine
from cxlrig.timeouts import TIMEOUTS

log = logging.getLogger(__name__)

USERS = {"root": 0, "user": 1000}
#: What on the kernel console means the guest is broken.
CRASH_PATTERNS = (
    rb"Kernel panic - not syncing",
    rb"Oops: ",
    rb"BUG: ",
    rb"general protection fault",
    rb"blocked for more than \d+ seconds",
    rb"watchdog: BUG: soft lockup",
)
_CRASH_RE = re.compile(b"|".join(CRASH_PATTERNS))
_CHUNK = 600  # base64 characters per line we type (a tty line holds 4095)
ESCAPE = b"\x1d"  # Ctrl-]


class GuestError(CxlrigError):
    """The guest could not do what was asked (timeout, crash, QEMU gone)."""


class GuestCrash(GuestError):
    """The kernel panicked, oopsed or hit a BUG."""


class CommandFailed(CheckFailed):
    """A command that had to succeed exited non-zero."""

    def __init__(self, result: CommandResult) -> None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-10:]
        super().__init__(f"guest command failed with status {result.status} "
                         f"(as {result.user}): {result.command}\n  " + "\n  ".join(tail))
        self.result = result


@dataclass(frozen=True)
class CommandResult:
    command: str
    user: str
    status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 0


class ConsoleWatcher:
    """Reads the kernel console log as it grows, looking for crashes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def check(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                new = f.read()
        except OSError:
            return
        if not new:
            return
        # Keep the last line in play: a pattern may be split across reads.
        cut = new.rfind(b"\n")
        if cut < 0:
            return
        self._offset += cut + 1
        match = _CRASH_RE.search(new[: cut + 1])
        if match:
            raise GuestCrash(f"the guest kernel reported '{match.group().decode().strip()}'\n"
                             + self.tail())

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.path.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        body = "\n".join("    " + ln for ln in text.rstrip().splitlines()[-lines:])
        return f"  kernel console ({self.path}), last lines:\n{body}"


class GuestSession:
    """Run commands in a booted guest and get their output and status."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.console = ConsoleWatcher(machine.run_dir.console_log)
        self._sock: socket.socket = machine.connect_shell()
        self._child = pexpect.fdpexpect.fdspawn(self._sock.fileno(), timeout=1)
        self._ready = False

    def close(self) -> None:
        # pexpect closes the descriptor; the socket object must not again.
        with contextlib.suppress(OSError, pexpect.ExceptionPexpect):
            self._child.close()
        self._sock.detach()

    # -- waiting ---------------------------------------------------------------

    def _send(self, text: str) -> None:
        self._child.send(text.encode())

    def _expect(self, pattern: bytes, timeout: float, what: str) -> re.Match[bytes]:
        """Wait for ``pattern``; meanwhile watch the console and QEMU."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            self.console.check()
            try:
                idx = self._child.expect([regex, pexpect.TIMEOUT, pexpect.EOF], timeout=0.5)
            except OSError:  # the socket reset: QEMU closed it on its way out
                idx = 2
            if idx == 0:
                m = self._child.match
                assert isinstance(m, re.Match)
                return m
            if idx == 2 or not self.machine.is_running():
                time.sleep(0.2)  # let QEMU finish writing the console log
                self.console.check()
                code = self.machine.wait(5)
                raise GuestError(f"QEMU went away (exit status {code}) while waiting for "
                                 f"{what}\n{self.console.tail()}")
            if time.monotonic() > deadline:
                raise GuestError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                                 f"{self._shell_tail()}\n{self.console.tail()}")

    def _shell_tail(self) -> str:
        buf = self._child.buffer if isinstance(self._child.buffer, bytes) else b""
        text = buf.decode(errors="replace").strip().splitlines()[-10:]
        return "  guest shell, last output:\n" + "\n".join("    " + ln for ln in text)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait for the guest shell; return the seconds it took."""
        timeout = timeout or TIMEOUTS.guest_boot
        start = time.monotonic()
        nonce = secrets.token_hex(4)
        deadline = start + timeout
        # Input typed before the shell opens the tty is lost: ask again until
        # an answer comes (printf joins the marker, so the echo cannot match).
        while True:
            self._send(f"\nprintf '@@CXLRIG-%s@@\\n' READY-{nonce}\n")
            try:
                self._expect(f"@@CXLRIG-READY-{nonce}@@".encode(),
                             min(2.0, max(0.1, deadline - time.monotonic())), "the guest shell")
                break
            except GuestError:
                if not self.machine.is_running():
                    raise
                if time.monotonic() >= deadline:
                    # The whole wait, not its last 2 s slice.
                    raise GuestError(
                        f"timed out after {time.monotonic() - start:.0f} s waiting for the "
                        f"guest shell\n{self._shell_tail()}\n{self.console.tail()}") from None
        # Quiet tty: no echo, no prompt, nothing to wade through.
        self._send("stty -echo; PS1=''\n")
        self._sync()
        self._ready = True
        took = time.monotonic() - start
        log.info("guest shell ready after %.1f s", took)
        return took

    def _sync(self) -> None:
        nonce = secrets.token_hex(4)
        self._send(f"printf '@@CXLRIG-%s@@\\n' SYNC-{nonce}\n")
        self._expect(f"@@CXLRIG-SYNC-{nonce}@@".encode(), TIMEOUTS.guest_command, "the shell")

    # -- commands ----------------------------------------------------------------

    def run(self, command: str, *, user: str = "root", timeout: float | None = None,
            check: bool = False) -> CommandResult:
        """Run ``command`` with ``sh`` as ``user``; stdout, stderr, status."""
        if not self._ready:
            raise GuestError("the guest shell is not ready (call wait_ready first)")
        if user not in USERS:
            raise GuestError(f"unknown guest user {user!r} (known: {', '.join(USERS)})")
        timeout = timeout or TIMEOUTS.guest_command
        nonce = secrets.token_hex(6)
        b64 = base64.b64encode(command.encode()).decode()
        start = time.monotonic()
        chunks = [b64[i:i + _CHUNK] for i in range(0, len(b64), _CHUNK)] or [""]
        lines = [f"echo {c} {'>' if i == 0 else '>>'} /tmp/.cxlrig/cmd.b64"
                 for i, c in enumerate(chunks)]
        self._send("\n".join(lines) + f"\ncxlrig_exec {nonce} {USERS[user]}\n")
        m = self._expect(f"@@CXLRIG-RC-{nonce}-(\\d+)@@".encode(), timeout,
                         f"'{_short(command)}' to finish")
        took = time.monotonic() - start
        before = self._child.before if isinstance(self._child.before, bytes) else b""
        out_mark = f"@@CXLRIG-OUT-{nonce}@@".encode()
        err_mark = f"@@CXLRIG-ERR-{nonce}@@".encode()
        try:
            body = before[before.index(out_mark) + len(out_mark):]
            out_b64, err_b64 = body.split(err_mark, 1)
            stdout = base64.b64decode(b"".join(out_b64.split())).decode(errors="replace")
            stderr = base64.b64decode(b"".join(err_b64.split())).decode(errors="replace")
        except (ValueError, binascii.Error) as exc:
            raise GuestError(f"garbled output from '{_short(command)}': {exc}") from exc
        result = CommandResult(command, user, int(m.group(1)), stdout, stderr, took)
        log.debug("guest[%s] %s -> %d in %.2f s", user, _short(command), result.status, took)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def poweroff(self, timeout: float = 30.0) -> None:
        """Power the guest off; QEMU (started with -no-reboot) then exits."""
        # QEMU may be on its way out already (the guest powered itself off).
        with contextlib.suppress(OSError):
            self._send("\npoweroff -f\n")
        deadline = time.monotonic() + timeout
        while self.machine.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)

    # -- a person at the keyboard -------------------------------------------------

    def interact(self) -> None:
        """Bridge the terminal to the guest shell until Ctrl-] or QEMU exits."""
        self._send("stty echo; PS1='cxlrig:\\w# '\n")
        fd_in = sys.stdin.fileno()
        sock = self._sock.fileno()
        saved = termios.tcgetattr(fd_in) if os.isatty(fd_in) else None
        try:
            if saved is not None:
                tty.setraw(fd_in)
            pending = self._child.buffer if isinstance(self._child.buffer, bytes) else b""
            if pending:
                os.write(sys.stdout.fileno(), pending)
            while self.machine.is_running():
                ready, _, _ = select.select([fd_in, sock], [], [], 0.2)
                if sock in ready:
                    data = os.read(sock, 4096)
                    if not data:
                        break
                    os.write(sys.stdout.fileno(), data)
                if fd_in in ready:
                    data = os.read(fd_in, 1024)
                    if not data or ESCAPE in data:
                        break
                    os.write(sock, data)
        finally:
            if saved is not None:
                termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)


def _short(command: str, width: int = 60) -> str:
    one = " ".join(command.split())
    return one if len(one) <= width else one[: width - 3] + "..."
