"""Fixtures for tests that boot guests: kernels and initramfs are built once
(and cached across runs by content hash), each test boots its own machine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cxlrig.guest.boot import Guest, GuestImage, booted
from cxlrig.guest.session import GuestSession
from cxlrig.images.initramfs import build_initramfs
from cxlrig.images.kernel import build_kernel
from cxlrig.machine.runner import RunDir
from cxlrig.scenario.runner import last_json_object
from cxlrig.topology import load

from ..conftest import REPO

Boot = Callable[..., contextlib.AbstractContextManager[Guest]]


@pytest.fixture(scope="session")
def initrd() -> Path:
    return build_initramfs()


@pytest.fixture(scope="session")
def kernels() -> Callable[[str], Path]:
    built: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in built:
            built[variant] = build_kernel(variant)
        return built[variant]

    return get


@pytest.fixture
def boot(tmp_path: Path, initrd: Path, kernels: Callable[[str], Path]) -> Boot:
    """``with boot("default", "v2") as guest:`` boots topologies/default.yaml."""

    @contextlib.contextmanager
    def _boot(topology: str = "default", variant: str = "v2", append: str = "",
              **kw: Any) -> Iterator[Guest]:
        path = Path(topology) if topology.endswith(".yaml") else \
            REPO / "topologies" / f"{topology}.yaml"
        image = GuestImage(kernels(variant), initrd, append)
        run = RunDir.create(tmp_path / "runs", f"{path.stem}-{variant}")
        with booted(load(path), image, run, **kw) as guest:
            yield guest

    return _boot


def run_json(session: GuestSession, command: str, user: str = "root") -> dict[str, Any]:
    """Run a guest program that prints one JSON object; parse its last line."""
    res = session.run(command, user=user)
    data = last_json_object(res.stdout)
    assert data is not None, f"no JSON from {command!r} (status {res.status}): " \
        f"{res.stdout!r} {res.stderr!r}"
    return dict(data)
