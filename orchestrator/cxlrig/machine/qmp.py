"""A small synchronous face over qemu.qmp's async QMPClient.

qemu.qmp's legacy synchronous wrapper grabs the global event loop; we own
one event loop per connection instead and run each call to completion on it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from qemu.qmp import ExecuteError, QMPClient, QMPError

from cxlrig.errors import CxlrigError

log = logging.getLogger(__name__)


class QmpError(CxlrigError):
    """A QMP command failed or the connection broke."""

    def __init__(self, message: str, desc: str | None = None) -> None:
        super().__init__(message)
        #: QEMU's own description of why it refused a command (None: no answer).
        self.desc = desc


class Qmp:
    """One QMP connection on its own event loop."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient(name)

    def connect(self, socket_path: str, timeout: float) -> None:
        try:
            self._loop.run_until_complete(
                asyncio.wait_for(self._client.connect(socket_path), timeout))
        except (QMPError, OSError, TimeoutError) as exc:
            raise QmpError(f"cannot connect to QMP at {socket_path}: {exc}") from exc

    def execute(self, cmd: str, args: dict[str, Any] | None = None,
                timeout: float = 30.0) -> Any:
        try:
            return self._loop.run_until_complete(
                asyncio.wait_for(self._client.execute(cmd, args), timeout))
        except ExecuteError as exc:
            raise QmpError(f"QMP {cmd} {args or ''} failed: {exc.error.error.desc}",
                           exc.error.error.desc) from exc
        except TimeoutError as exc:
            raise QmpError(f"QMP {cmd} did not answer within {timeout:.0f} s") from exc
        except (QMPError, OSError, EOFError) as exc:
            raise QmpError(f"QMP {cmd} failed: {exc!r}") from exc

    def hmp(self, command: str, timeout: float = 30.0) -> str:
        out = self.execute("human-monitor-command", {"command-line": command}, timeout)
        return str(out)

    def close(self) -> None:
        try:
            self._loop.run_until_complete(asyncio.wait_for(self._client.disconnect(), 5))
        except Exception as exc:  # closing after QEMU died is expected to fail
            log.debug("QMP disconnect: %r", exc)
        finally:
            self._loop.close()
