"""cxlrig as a pytest plugin: write your own CXL tests against a booted guest.

Installed with cxlrig (entry point ``pytest11``), so any pytest run has it::

    import pytest

    @pytest.mark.cxl(topology="default", variant="v2")
    def test_my_node_exists(cxl_guest):
        res = cxl_guest.session.run("cat /sys/devices/system/node/node1/meminfo")
        assert res.ok

``cxl_guest`` is a :class:`cxlrig.guest.boot.Guest`: booted, its CXL regions
created and onlined as the topology says, with ``session.run`` for commands
(as root or ``user="user"``), ``regions``, ``nodes`` and the QEMU machine.
Tests of a module that ask for the same machine share one boot, unless
marked ``shared=False``. A list of topologies or variants in the marker runs
the test once per machine. ``requires={...}`` (as a scenario's) skips, with
the reason, on a topology that lacks it. Options: ``--cxl-topology``,
``--cxl-variant``, ``--cxl-kernel BZIMAGE``, ``--cxl-keep N``. Works with pytest-xdist: each
worker boots its own machines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cxlrig.guest.boot import Guest
from cxlrig.images import GuestImage

MARKER = "cxl"


@dataclass(frozen=True)
class Want:
    """The machine a test asked for."""

    topology: str
    variant: str
    append: str = ""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cxlrig", "CXL guests for tests (cxlrig)")
    group.addoption("--cxl-topology", default="default",
                    help="topology for cxl_guest tests whose marker names none (default: "
                         "default)")
    group.addoption("--cxl-variant", default="v2",
                    help="kernel variant for cxl_guest tests whose marker names none")
    group.addoption("--cxl-kernel", default=None, metavar="BZIMAGE",
                    help="boot this bzImage instead of building the variant")
    group.addoption("--cxl-keep", default=1, type=int, metavar="N",
                    help="shared machines a module keeps running at once (default 1)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(topology=..., variant=..., append='', shared=True, "
        "requires={{}}): the machine cxl_guest boots (lists: once per machine)")


def _listify(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _wants(marker: pytest.Mark | None, config: pytest.Config) -> list[Want]:
    kw = marker.kwargs if marker else {}
    topologies = _listify(kw.get("topology", config.getoption("--cxl-topology")))
    variants = _listify(kw.get("variant", config.getoption("--cxl-variant")))
    return [Want(t, v, str(kw.get("append", ""))) for t in topologies for v in variants]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A marker listing several machines runs the test once on each."""
    if "cxl_guest" not in metafunc.fixturenames:
        return
    wants = _wants(metafunc.definition.get_closest_marker(MARKER), metafunc.config)
    if len(wants) > 1:
        metafunc.parametrize("cxl_want", wants, indirect=True,
                             ids=[f"{w.topology}-{w.variant}" for w in wants])


def _topology_file(name: str, base: Path) -> Path:
    from cxlrig.paths import DATA_ROOT

    if name.endswith(".yaml"):
        path = Path(name)
        return path if path.is_absolute() else base / path
    return DATA_ROOT / "topologies" / f"{name}.yaml"


class GuestPool:
    """Booted machines of one module, by what was asked; all stopped at its end.

    At most ``keep`` shared machines run at once (``--cxl-keep``, default 1):
    asking for another stops the one asked for least recently, so a module
    that goes through eight topologies does not hold eight QEMUs.
    """

    def __init__(self, config: pytest.Config, runs: Path) -> None:
        self.config = config
        self.runs = runs
        self.keep = max(1, int(config.getoption("--cxl-keep")))
        self.guests: dict[tuple[Want, Path], tuple[Guest, contextlib.ExitStack]] = {}

    def _start(self, want: Want, path: Path, stack: contextlib.ExitStack) -> Guest:
        from cxlrig.guest.boot import booted
        from cxlrig.images import guest_image
        from cxlrig.machine.runner import RunDir
        from cxlrig.topology import load

        image: GuestImage = guest_image(want.variant, self.config.getoption("--cxl-kernel"),
                                        want.append)
        run = RunDir.create(self.runs, f"{path.stem}-{want.variant}")
        return stack.enter_context(booted(load(path), image, run))

    def shared(self, want: Want, base: Path) -> Guest:
        key = (want, _topology_file(want.topology, base))
        if key in self.guests:
            self.guests[key] = self.guests.pop(key)  # the most recently asked for, last
            return self.guests[key][0]
        while len(self.guests) >= self.keep:
            _, stack = self.guests.pop(next(iter(self.guests)))
            stack.close()
        stack = contextlib.ExitStack()
        try:
            guest = self._start(want, key[1], stack)
        except BaseException:
            stack.close()
            raise
        self.guests[key] = (guest, stack)
        return guest

    def own(self, want: Want, base: Path, stack: contextlib.ExitStack) -> Guest:
        """A machine of the caller's own, stopped when ``stack`` closes."""
        return self._start(want, _topology_file(want.topology, base), stack)

    def close(self) -> None:
        while self.guests:
            _, stack = self.guests.pop(next(iter(self.guests)))
            stack.close()


@pytest.fixture(scope="module")
def cxl_guest_pool(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestPool]:
    """The module's booted machines (``cxl_guest`` takes them from here)."""
    pool = GuestPool(request.config, tmp_path_factory.mktemp("cxl-guests"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def cxl_want(request: pytest.FixtureRequest) -> Want:
    """The machine asked for: the ``cxl`` marker's (one of them when it lists several)."""
    want = getattr(request, "param", None)
    if isinstance(want, Want):
        return want
    (only,) = _wants(request.node.get_closest_marker(MARKER), request.config)
    return only


@pytest.fixture
def cxl_guest(request: pytest.FixtureRequest, cxl_guest_pool: GuestPool,
              cxl_want: Want) -> Iterator[Guest]:
    """A booted guest with its CXL memory online, as the ``cxl`` marker asks."""
    from cxlrig.scenario.model import RequiresSpec
    from cxlrig.topology import load

    marker = request.node.get_closest_marker(MARKER)
    kw = marker.kwargs if marker else {}
    base = Path(str(request.node.fspath)).parent
    requires = kw.get("requires")
    if requires:
        lacks = RequiresSpec.model_validate(requires).unmet(
            load(_topology_file(cxl_want.topology, base)))
        if lacks:
            pytest.skip(f"topology {cxl_want.topology}: {'; '.join(lacks)}")
    if kw.get("shared", True):
        yield cxl_guest_pool.shared(cxl_want, base)
        return
    with contextlib.ExitStack() as own:
        yield cxl_guest_pool.own(cxl_want, base, own)
