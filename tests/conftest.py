"""Shared test set-up: every run directory goes under pytest's tmp area."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOPOLOGIES = sorted((REPO / "topologies").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXLRIG_RUNS", str(tmp_path / "runs"))
