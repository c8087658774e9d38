"""Matrix exports: KCIDB JSON that kcidb_io accepts, CI workflows their engines' schemas accept."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import kcidb_io  # type: ignore[import-untyped]
import pytest
import yaml

from cxlrig.cli import main
from cxlrig.matrix import export
from cxlrig.matrix.record import Cell, CellCheck, KernelId, MatrixRun, write_cell, write_run
from cxlrig.results import Verdict

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
GITHUB_SCHEMA = "vendor.github-workflows"
GITLAB_SCHEMA = "vendor.gitlab-ci"
MATRIX = "matrices/nightly.yaml"
GITHUB_MAX = export.GITHUB_MAX_JOBS - 1


def _cell(topology: str, variant: str, scenario: str, verdict: Verdict | None,
          **kw: Any) -> Cell:
    return Cell(key=f"{topology}/{variant}/{scenario}", scenario=scenario, topology=topology,
                variant=variant, topology_hash=hashlib.sha256(topology.encode()).hexdigest()[:16],
                verdict=verdict, **kw)


CELLS = (
    _cell("default", "v1", "bring-up", Verdict.PASS, attempts=1, seconds=41.5,
          outcome="3 checks passed", checks=(CellCheck(True, "regions online"),),
          figures={"boot_s": 4.25, "bringup_s": 1.5}),
    _cell("default", "v1", "unprivileged-caller", Verdict.FAIL, attempts=1, seconds=30.0,
          outcome="1 of 2 checks failed", checks=(CellCheck(False, "EPERM expected, got 0"),)),
    # An error that passed on its retry.
    _cell("default", "v2", "bring-up", Verdict.PASS, flaky=True, attempts=2, seconds=44.0,
          outcome="passed on attempt 2 (attempt 1: guest did not boot)"),
    _cell("default", "v2", "unprivileged-caller", Verdict.ERROR, attempts=2, seconds=600.0,
          reason="timed out after 600 s", outcome="timed out after 600 s"),
    _cell("devdax", "v1", "unprivileged-caller", Verdict.SKIP, attempts=0,
          reason="no kmem region on a device-dax machine"),
    # A name with characters a KCIDB path component cannot hold.
    _cell("two.hosts+switch", "v1", "bring-up", Verdict.PASS, attempts=1, seconds=52.0),
    # Planned, not finished: no test.
    _cell("devdax", "v1", "bring-up", None),
)
FINISHED = [c for c in CELLS if c.done]
KERNELS = {
    "v1": KernelId(label="v1", like="v1", image_hash="0123456789abcdef",
                   patch_hash="fedcba9876543210", config_hash="00112233aabbccdd"),
    "v2": KernelId(label="v2", like="v2", image_hash="89abcdef01234567",
                   patch_hash="7654321076543210", config_hash="44556677aabbccdd",
                   source="/src/linux"),
}


def _run(**kw: Any) -> MatrixRun:
    args: dict[str, Any] = dict(
        version=1, name="nightly", matrix_file=MATRIX, shard="1/1",
        started="2025-03-04T02:17:00Z", finished="2025-03-04T03:40:12Z", cells=CELLS,
        kernels=KERNELS, qemu="10.0.2", cxlrig="0.1.0")
    args.update(kw)
    return MatrixRun(**args)


def _check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


# ---- KCIDB -----------------------------------------------------------------


def test_kcidb_validates_with_the_newest_schema() -> None:
    data = export.kcidb(_run())
    latest = kcidb_io.schema.LATEST
    latest.validate(data)  # raises jsonschema's ValidationError if not
    assert latest.is_valid_exactly(data)
    assert data["version"] == {"major": latest.major, "minor": latest.minor}
    assert (latest.major, latest.minor) >= (5, 3)


def test_kcidb_objects_and_links() -> None:
    data = export.kcidb(_run())
    assert len(data["checkouts"]) == 1
    assert len(data["tests"]) == len(FINISHED) == 6
    assert len(data["builds"]) == len(KERNELS)
    ids = [o["id"] for kind in ("checkouts", "builds", "tests") for o in data[kind]]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("cxlrig:") for i in ids)
    assert all(o["origin"] == "cxlrig" for k in ("checkouts", "builds", "tests")
               for o in data[k])
    checkout_id = data["checkouts"][0]["id"]
    assert {b["checkout_id"] for b in data["builds"]} == {checkout_id}
    builds = {b["misc"]["variant"]: b for b in data["builds"]}
    assert builds["v1"]["id"].startswith("cxlrig:v1-0123456789abcdef")
    assert builds["v2"]["misc"]["source"] == "/src/linux"
    assert builds["v2"]["config_name"] == "v2"
    assert all(b["architecture"] == "x86_64" and b["status"] == "PASS"
               for b in data["builds"])
    for test in data["tests"]:
        assert test["build_id"] == builds[test["misc"]["variant"]]["id"]


def test_kcidb_tests_map_each_cell() -> None:
    tests = {t["misc"]["key"]: t for t in export.kcidb(_run())["tests"]}
    assert set(tests) == {c.key for c in FINISHED}
    status = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIP"}
    path_re = kcidb_io.schema.LATEST.path_re
    for cell in FINISHED:
        test = tests[cell.key]
        assert cell.verdict is not None
        assert test["status"] == status[cell.verdict.value]
        assert path_re.fullmatch(test["path"])
        assert test["start_time"] == "2025-03-04T02:17:00+00:00"
        assert test["misc"]["attempts"] == cell.attempts
        assert test["misc"]["flaky"] is cell.flaky
        assert test["environment"]["misc"] == {"topology": cell.topology,
                                               "topology_hash": cell.topology_hash,
                                               "qemu": "10.0.2"}
        assert cell.topology in test["environment"]["comment"]
    assert tests["default/v1/bring-up"]["path"] == "cxlrig.default.bring-up"
    assert tests["default/v2/unprivileged-caller"]["path"] == "cxlrig.default.unprivileged-caller"
    assert tests["two.hosts+switch/v1/bring-up"]["path"] == "cxlrig.two_hosts_switch.bring-up"
    assert tests["default/v1/bring-up"]["duration"] == 41.5
    assert tests["default/v1/bring-up"]["misc"]["figures"] == {"boot_s": 4.25, "bringup_s": 1.5}
    assert tests["default/v1/bring-up"]["comment"] == "3 checks passed"
    assert tests["default/v2/bring-up"]["misc"]["flaky"] is True
    skip = tests["devdax/v1/unprivileged-caller"]
    assert "duration" not in skip
    assert skip["misc"]["reason"] == "no kmem region on a device-dax machine"
    assert skip["comment"] == "no kmem region on a device-dax machine"


def test_kcidb_checkout_and_options() -> None:
    data = export.kcidb(_run(), origin="acme_ci",
                        git_repository_url="https://example.org/cxlrig.git",
                        git_commit_hash="0123456789abcdef0123456789abcdef01234567")
    kcidb_io.schema.LATEST.validate(data)
    (checkout,) = data["checkouts"]
    assert checkout["id"].startswith("acme_ci:")
    assert checkout["git_repository_url"] == "https://example.org/cxlrig.git"
    assert checkout["git_commit_hash"] == "0123456789abcdef0123456789abcdef01234567"
    assert checkout["start_time"] == "2025-03-04T02:17:00+00:00"
    assert checkout["origin_tests_finish_time"] == "2025-03-04T03:40:12+00:00"
    assert all(t["id"].startswith("acme_ci:") for t in data["tests"])
    # Another night's run is another checkout, with its own builds and tests.
    other = export.kcidb(_run(started="2025-03-05T02:17:00Z"))
    assert other["checkouts"][0]["id"] != export.kcidb(_run())["checkouts"][0]["id"]
    assert not {b["id"] for b in other["builds"]} & {b["id"] for b in data["builds"]}


def test_kcidb_cell_without_a_recorded_kernel_still_links() -> None:
    data = export.kcidb(_run(kernels={"v1": KERNELS["v1"]}))
    kcidb_io.schema.LATEST.validate(data)
    build_ids = {b["id"] for b in data["builds"]}
    assert len(build_ids) == 2
    assert all(t["build_id"] in build_ids for t in data["tests"])


@pytest.mark.parametrize("kw, word", [
    ({"origin": "Has Caps"}, "origin"),
    ({"git_commit_hash": "abc"}, "commit"),
    ({"git_repository_url": "git@example.org:x.git"}, "URL"),
])
def test_kcidb_refuses_bad_arguments(kw: dict[str, Any], word: str) -> None:
    with pytest.raises(export.ExportError, match=word):
        export.kcidb(_run(), **kw)


def test_kcidb_invalid_output_is_an_export_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(export._KCIDB_STATUS, Verdict.PASS, "GOOD")
    with pytest.raises(export.ExportError, match=r"bug in cxlrig.*tests\.\d+\.status"):
        export.kcidb(_run())


# ---- CI workflows ----------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 4, GITHUB_MAX])
def test_github_workflow_is_valid(shards: int, tmp_path: Path) -> None:
    text = export.github_actions(MATRIX, shards)
    path = tmp_path / "nightly.yml"
    path.write_text(text)
    proc = _check_jsonschema(GITHUB_SCHEMA, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    doc = yaml.safe_load(text)
    assert set(doc["on"]) == {"schedule", "workflow_dispatch"}
    shard, merge = doc["jobs"]["shard"], doc["jobs"]["merge"]
    assert shard["strategy"]["matrix"]["shard"] == list(range(1, shards + 1))
    assert shard["strategy"]["fail-fast"] is False
    assert shard["container"] == merge["container"] == "debian:bookworm"
    runs = [s["run"] for s in shard["steps"] if "run" in s]
    assert "make setup" in runs
    assert (f".venv/bin/cxlrig matrix run {MATRIX} --shard ${{{{ matrix.shard }}}}/{shards} "
            "--out shard-${{ matrix.shard }}") in runs
    uploads = [s for s in shard["steps"] if s.get("uses") == "actions/upload-artifact@v4"]
    assert [(u["if"], u["with"]["name"]) for u in uploads] == [
        ("always()", "cxlrig-shard-${{ matrix.shard }}")]
    assert any(s.get("uses") == "actions/cache@v4" for s in shard["steps"])

    assert merge["needs"] == "shard" and merge["if"] == "always()"
    steps = merge["steps"]
    download = next(s for s in steps if s.get("uses") == "actions/download-artifact@v4")
    assert download["with"] == {"pattern": "cxlrig-shard-*", "path": "shards"}
    names = [s.get("id") or s.get("uses") or s.get("run") for s in steps]
    assert names.index("merge") < names.index("actions/upload-artifact@v4") < len(names) - 1
    assert "matrix merge shards/* --out merged" in steps[names.index("merge")]["run"]
    upload = steps[names.index("actions/upload-artifact@v4")]
    assert upload["if"] == "always()" and upload["with"]["name"] == "cxlrig-nightly"
    assert steps[-1]["if"] == "always()" and "exit" in steps[-1]["run"]


@pytest.mark.parametrize("shards", [1, 4, export.GITLAB_MAX_PARALLEL])
def test_gitlab_pipeline_is_valid(shards: int, tmp_path: Path) -> None:
    text = export.gitlab(MATRIX, shards)
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(text)
    proc = _check_jsonschema(GITLAB_SCHEMA, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    doc = yaml.safe_load(text)
    assert doc["stages"] == ["shard", "merge"]
    shard, merge = doc["cxlrig-shard"], doc["cxlrig-merge"]
    assert shard["image"] == merge["image"] == "debian:bookworm"
    if shards > 1:
        assert shard["parallel"] == shards
        assert "--shard \"$CI_NODE_INDEX/$CI_NODE_TOTAL\"" in shard["script"][0]
        assert shard["artifacts"]["paths"] == ["shard-$CI_NODE_INDEX"]
    else:
        assert "parallel" not in shard
        assert "--shard \"1/1\"" in shard["script"][0]
    assert shard["artifacts"]["when"] == "always"
    assert merge["stage"] == "merge" and merge["when"] == "always"
    assert merge["needs"] == [{"job": "cxlrig-shard", "artifacts": True}]
    assert "matrix merge shard-* --out merged" in merge["script"][0]
    assert merge["artifacts"]["reports"]["junit"] == "merged/junit.xml"
    assert "make setup" in doc["default"]["before_script"]


def test_too_many_or_too_few_shards() -> None:
    with pytest.raises(ValueError, match=str(export.GITHUB_MAX_JOBS)):
        export.github_actions(MATRIX, GITHUB_MAX + 1)
    with pytest.raises(ValueError, match=str(export.GITLAB_MAX_PARALLEL)):
        export.gitlab(MATRIX, export.GITLAB_MAX_PARALLEL + 1)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="shards"):
            export.github_actions(MATRIX, bad)
        with pytest.raises(ValueError, match="shards"):
            export.gitlab(MATRIX, bad)
    # The CLI shows a CxlrigError as a message, not a traceback.
    with pytest.raises(export.ExportError):
        export.gitlab(MATRIX, 1000)


def test_matrix_file_is_quoted_and_checked() -> None:
    doc = yaml.safe_load(export.github_actions("matrices/my nightly.yaml", 2))
    runs = [s["run"] for s in doc["jobs"]["shard"]["steps"] if "run" in s]
    assert any("matrix run 'matrices/my nightly.yaml' --shard" in r for r in runs)
    with pytest.raises(export.ExportError):
        export.github_actions("${{ secrets.TOKEN }}.yaml", 2)
    with pytest.raises(export.ExportError, match=r"3\.11 or newer"):
        export.github_actions(MATRIX, 2, python="3.9")
    other = yaml.safe_load(export.github_actions(MATRIX, 2, python="3.12"))
    assert other["jobs"]["shard"]["container"] == "python:3.12-bookworm"


def test_schema_check_can_fail(tmp_path: Path) -> None:
    doc = yaml.safe_load(export.github_actions(MATRIX, 4))
    del doc["jobs"]["shard"]["runs-on"]
    doc["nightly"] = True
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = _check_jsonschema(GITHUB_SCHEMA, path)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "'runs-on' is a required property" in out, out
    assert "'nightly' was unexpected" in out, out

    # GitLab's schema agrees with our cap.
    gl = yaml.safe_load(export.gitlab(MATRIX, 4))
    gl["cxlrig-shard"]["parallel"] = export.GITLAB_MAX_PARALLEL + 1
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(yaml.safe_dump(gl, sort_keys=False))
    proc = _check_jsonschema(GITLAB_SCHEMA, path)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "cxlrig-shard" in proc.stdout + proc.stderr


def test_the_cli_writes_each_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    for flag, schema in (("--github-actions", GITHUB_SCHEMA), ("--gitlab", GITLAB_SCHEMA)):
        out = tmp_path / f"{flag[2:]}.yml"
        assert main(["matrix", "export", flag, str(repo / "matrices" / "nightly.yaml"),
                     "--shards", "6", "-o", str(out)]) == 0
        proc = _check_jsonschema(schema, out)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "--shard" in out.read_text()
    # A matrix file with a problem is refused with its location, not exported.
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: m\ntopologies: [nosuch]\nscenarios: [bring-up]\n")
    capsys.readouterr()
    assert main(["matrix", "export", "--gitlab", str(bad)]) == 1
    assert f"{bad}:2:14: topologies[0]" in capsys.readouterr().out
    # A run directory as KCIDB, from the records alone.
    run = _run()
    write_run(tmp_path / "run", replace(run, cells=tuple(replace(c, verdict=None)
                                                          for c in run.cells)))
    for c in run.cells:
        if c.verdict is not None:
            write_cell(tmp_path / "run", c)
    assert main(["matrix", "export", "--kcidb", str(tmp_path / "run"),
                 "-o", str(tmp_path / "k.json")]) == 0
    data = json.loads((tmp_path / "k.json").read_text())
    kcidb_io.schema.LATEST.validate(data)
    assert len(data["tests"]) == sum(c.verdict is not None for c in run.cells)
