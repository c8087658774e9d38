"""A client for the plugin's control socket (``control=PATH``).

One command per line, one reply per line: ``ok [detail]`` or ``error
message``. The protocol is described in ``qemu-plugin/README.md``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from cxlrig.errors import CxlrigError
from cxlrig.plugin.addrmap import MAX_CONTROL_LINE
from cxlrig.timeouts import TIMEOUTS

log = logging.getLogger(__name__)


class ControlError(CxlrigError):
    """The control socket could not be reached, timed out, or the plugin said ``error``."""


class Control:
    """A connection to a running plugin's control socket; a context manager.

    ``timeout`` bounds each reply (a snapshot writes the whole output file
    before it answers); ``connect_timeout`` bounds waiting for the socket to
    accept, which it does as soon as QEMU has loaded the plugin.
    """

    def __init__(self, path: Path, *, timeout: float | None = None,
                 connect_timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout if timeout is not None else TIMEOUTS.qmp_command
        self._connect_timeout = (connect_timeout if connect_timeout is not None
                                 else TIMEOUTS.qemu_start)
        self._sock: socket.socket | None = None
        self._buf = b""
        self._log = log.getChild(path.name)

    def __enter__(self) -> Control:
        self.connect()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        deadline = time.monotonic() + self._connect_timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise ControlError(f"plugin control socket {self.path}: not accepting "
                                       f"after {self._connect_timeout:.0f} s ({exc})") from exc
                time.sleep(0.05)
                continue
            except OSError as exc:
                sock.close()
                raise ControlError(f"plugin control socket {self.path}: {exc}") from exc
            self._sock = sock
            return

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def command(self, line: str) -> str:
        """Send one command; return what follows ``ok``, raise on ``error``."""
        if "\n" in line:
            raise ValueError(f"a control command is one line: {line!r}")
        if len(line.encode()) > MAX_CONTROL_LINE:
            # The plugin would answer "error" and hang up.
            raise ValueError(f"a control command is at most {MAX_CONTROL_LINE} bytes, "
                             f"this one {len(line.encode())}: {line[:60]!r}...")
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._log.debug("> %s", line)
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(line.encode() + b"\n")
            while b"\n" not in self._buf:
                self._sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = self._sock.recv(4096)
                if not chunk:
                    raise ControlError(f"plugin control {line!r}: the plugin closed the "
                                       "connection (QEMU exited?)")
                self._buf += chunk
        except TimeoutError as exc:
            self.close()
            raise ControlError(f"plugin control {line!r}: no reply within "
                               f"{self.timeout:.0f} s") from exc
        except OSError as exc:
            self.close()
            raise ControlError(f"plugin control {line!r}: {exc}") from exc
        raw, _, self._buf = self._buf.partition(b"\n")
        reply = raw.decode(errors="replace")
        self._log.debug("< %s", reply)
        word, _, rest = reply.partition(" ")
        if word == "ok":
            return rest
        if word == "error":
            raise ControlError(f"plugin control {line!r}: {rest}")
        raise ControlError(f"plugin control {line!r}: unexpected reply {reply!r}")

    def snapshot(self, name: str) -> int:
        """Close the current phase as ``name``; returns its index once the output is written."""
        return int(self.command(f"snapshot {name}"))

    def add(self, args: Iterable[tuple[str, str]]) -> None:
        """Add ``node``/``region``/``lat`` arguments (:func:`~cxlrig.plugin.addrmap.map_args`).

        All or nothing: the plugin checks them against what it has, as at start.
        Accesses before the addition stay where they were counted (often
        ``unmatched``): ``reset`` after adding.
        """
        words = [f"{k}={v}" for k, v in args]
        bad = [w for w in words if not w or any(c.isspace() for c in w)]
        if bad or not words:
            raise ValueError(f"plugin add: empty or blank-containing arguments {words!r}")
        self.command("add " + " ".join(words))

    def reset(self) -> None:
        """Discard the current phase's counts and start a new one."""
        self.command("reset")

    def flush(self) -> None:
        """Write the output file now."""
        self.command("flush")

    def delay(self, on: bool) -> None:
        """Switch delay accounting on or off while the guest runs.

        Needs ``delay=on`` at load (the plugin answers ``error`` otherwise
        to ``delay on``). Stop the VM around the switch and a snapshot for
        phases that are wholly on or off.
        """
        self.command("delay on" if on else "delay off")

    def limits(self) -> dict[str, int | str]:
        """The plugin's limits and format constants (``max_node_id``, ``delay_min_ns``, ...)."""
        text = self.command("limits")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ControlError(f"plugin control 'limits': not JSON: {text!r}") from exc
        if not isinstance(data, dict):
            raise ControlError(f"plugin control 'limits': not a JSON object: {text!r}")
        out: dict[str, int | str] = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ControlError(f"plugin control 'limits': {key} is {value!r}, "
                                   "not an integer or a string")
            out[key] = value
        return out

    def ping(self) -> str:
        """``cxlrig-mem VERSION``."""
        return self.command("ping")
