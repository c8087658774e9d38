"""The control-socket client against a scripted stand-in for the plugin (no QEMU)."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cxlrig.plugin import Control, ControlError
from cxlrig.plugin.addrmap import MAX_CONTROL_LINE

Replies = Callable[[str], str]


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cxlrig-t-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class FakePlugin:
    """Answers each line with ``replies(line)`` and records what it was sent."""

    def __init__(self, path: Path, replies: Replies) -> None:
        self.received: list[str] = []
        self._replies = replies
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn:
            buf = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    raw, _, buf = buf.partition(b"\n")
                    line = raw.decode()
                    self.received.append(line)
                    conn.sendall(self._replies(line).encode() + b"\n")

    def close(self) -> None:
        self._server.close()
        self._thread.join(timeout=5)


@pytest.fixture
def fake(sockdir: Path) -> Iterator[Callable[[Replies], tuple[FakePlugin, Control]]]:
    made: list[tuple[FakePlugin, Control]] = []

    def make(replies: Replies) -> tuple[FakePlugin, Control]:
        plugin = FakePlugin(sockdir / "c.sock", replies)
        control = Control(sockdir / "c.sock", timeout=5, connect_timeout=5)
        made.append((plugin, control))
        return plugin, control

    yield make
    for plugin, control in made:
        control.close()
        plugin.close()


LIMITS = ('{"plugin": "cxlrig-mem", "version": "1.1.0", "max_node_id": 4095, '
          '"delay_min_ns": 200000}')


def test_limits_are_parsed(fake: Callable[[Replies], tuple[FakePlugin, Control]]) -> None:
    plugin, c = fake(lambda line: "ok " + LIMITS)
    assert c.limits() == {"plugin": "cxlrig-mem", "version": "1.1.0", "max_node_id": 4095,
                          "delay_min_ns": 200000}
    assert plugin.received == ["limits"]


@pytest.mark.parametrize("reply, message", [
    ("ok {not json", "not JSON"),
    ("ok [1, 2]", "not a JSON object"),
    ('ok {"max_sample": 1.5}', "max_sample is 1.5, not an integer or a string"),
    ('ok {"pages": true}', "pages is True, not an integer or a string"),
    ("error unknown command", "unknown command"),
], ids=["not-json", "not-object", "float", "bool", "old-plugin"])
def test_bad_limits_are_errors(fake: Callable[[Replies], tuple[FakePlugin, Control]],
                               reply: str, message: str) -> None:
    _, c = fake(lambda line: reply)
    with pytest.raises(ControlError, match=message):
        c.limits()


def test_delay_sends_on_and_off(fake: Callable[[Replies], tuple[FakePlugin, Control]]) -> None:
    def replies(line: str) -> str:
        if line == "delay on":
            return "error delay on: delay=on is needed at load"
        return "ok"

    plugin, c = fake(replies)
    c.delay(False)
    with pytest.raises(ControlError, match="delay=on is needed at load"):
        c.delay(True)
    assert plugin.received == ["delay off", "delay on"]


def test_a_line_the_plugin_would_refuse_is_not_sent(
        fake: Callable[[Replies], tuple[FakePlugin, Control]]) -> None:
    plugin, c = fake(lambda line: "ok")
    c.command("x" * MAX_CONTROL_LINE)
    with pytest.raises(ValueError, match=f"at most {MAX_CONTROL_LINE} bytes"):
        c.command("x" * (MAX_CONTROL_LINE + 1))
    c.command("ping")
    assert plugin.received == ["x" * MAX_CONTROL_LINE, "ping"]
