"""A user's series on a user's tree: applied to a copy in the cache, never to the tree.

A small git repository stands in for the kernel tree (nothing is compiled):
the copy holds the tree's files plus the series, the tree stays as it was,
the next build sees the tree's new commits and forgets the old series.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from cxlrig.images.kernel import KernelBuildError, _tree_key, tree_to_build
from cxlrig.images.variants import get_variant, load_series

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]


def _git(tree: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(tree), *args], check=True, capture_output=True,
                          text=True).stdout


def _state(tree: Path) -> dict[str, str]:
    """Every file under ``tree`` (with .git) and its content hash."""
    out = {}
    for dirpath, _, names in os.walk(tree):
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(tree))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CXLRIG_CACHE", str(tmp_path / "cache"))
    t = tmp_path / "linux"
    (t / "mm").mkdir(parents=True)
    (t / "mm" / "migrate.c").write_text("int a;\nint b;\nint c;\n")
    (t / "Makefile").write_text("all:\n")
    (t / ".gitignore").write_text("*.o\n")
    _git(t, "init", "-q")
    _git(t, "add", "-A")
    _git(t, "commit", "-qm", "base")
    (t / "mm" / "migrate.o").write_text("a build output: not copied\n")
    return t


def _series(tmp_path: Path, tree: Path, name: str, change: tuple[str, str],
            new_file: str | None = None) -> Path:
    """A format-patch series of one commit made in a clone of ``tree``."""
    work = tmp_path / f"work-{name}"
    subprocess.run([*GIT, "clone", "-q", str(tree), str(work)], check=True)
    path = work / "mm" / "migrate.c"
    path.write_text(path.read_text().replace(*change))
    if new_file:
        (work / new_file).write_text("new\n")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", f"mm: {name}")
    out = tmp_path / name
    _git(work, "format-patch", "-q", "-1", "-o", str(out))
    (out / "variant.yaml").write_text("like: v2\n")
    return out


def test_the_series_goes_to_a_copy_and_the_tree_is_untouched(tmp_path: Path, tree: Path) -> None:
    series = load_series(_series(tmp_path, tree, "one", ("int b;", "int b2;"), "mm/new.c"))
    before = _state(tree)
    copy = tree_to_build(series, tree, None)
    assert copy != tree and copy.is_relative_to(tmp_path / "cache")
    assert (copy / "mm" / "migrate.c").read_text() == "int a;\nint b2;\nint c;\n"
    assert (copy / "mm" / "new.c").read_text() == "new\n"
    assert not (copy / "mm" / "migrate.o").exists()
    assert _state(tree) == before
    assert _git(tree, "status", "--porcelain") == ""


def test_the_next_build_follows_the_tree_and_forgets_the_old_series(tmp_path: Path,
                                                                    tree: Path) -> None:
    one = load_series(_series(tmp_path, tree, "one", ("int b;", "int b2;"), "mm/new.c"))
    copy = tree_to_build(one, tree, None)
    patched_at = (copy / "mm" / "migrate.c").stat().st_mtime_ns
    (tree / "mm" / "other.c").write_text("int d;\n")  # the user keeps working
    _git(tree, "add", "-A")
    _git(tree, "commit", "-qm", "more")
    two = load_series(_series(tmp_path, tree, "two", ("int c;", "int c2;")))
    assert tree_to_build(two, tree, None) == copy
    assert (copy / "mm" / "migrate.c").read_text() == "int a;\nint b;\nint c2;\n"
    assert (copy / "mm" / "other.c").read_text() == "int d;\n"
    assert not (copy / "mm" / "new.c").exists()  # the old series' file is gone
    # Newer than anything built from the old series' version: make rebuilds it.
    assert (copy / "mm" / "migrate.c").stat().st_mtime_ns >= patched_at


def test_a_series_that_does_not_apply_to_the_tree_names_it(tmp_path: Path, tree: Path) -> None:
    series = _series(tmp_path, tree, "one", ("int b;", "int b2;"))
    (tree / "mm" / "migrate.c").write_text("int a;\nint x;\nint c;\n")  # uncommitted change
    with pytest.raises(KernelBuildError) as info:
        tree_to_build(load_series(series), tree, None)
    msg = str(info.value)
    assert f"does not apply to {tree}" in msg and "mm/migrate.c: hunk #1" in msg, msg
    assert (tree / "mm" / "migrate.c").read_text() == "int a;\nint x;\nint c;\n"


def test_a_builtin_variant_builds_the_tree_as_it_is(tmp_path: Path, tree: Path) -> None:
    assert tree_to_build(get_variant("v2"), tree, None) == tree


def test_the_image_key_names_the_series(tmp_path: Path, tree: Path) -> None:
    one = load_series(_series(tmp_path, tree, "one", ("int b;", "int b2;")))
    two = load_series(_series(tmp_path, tree, "two", ("int c;", "int c2;")))
    keys = {_tree_key(v, tree) for v in (one, two, get_variant("v2"))}
    assert len(keys) == 3
