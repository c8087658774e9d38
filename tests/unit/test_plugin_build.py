"""Building the plugin into the content-hash cache (gcc, no QEMU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cxlrig.plugin.build import (
    LIBRARY,
    SOURCE_DIR,
    PluginBuildError,
    build_plugin,
    cache_key,
    plugin_header_dir,
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    copy = tmp_path / "qemu-plugin"
    shutil.copytree(SOURCE_DIR, copy, ignore=shutil.ignore_patterns("out"))
    return copy


@pytest.fixture
def header_dir() -> Path:
    # Resolved before the cache is redirected: the header stays where set-up put it.
    return plugin_header_dir()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("CXLRIG_CACHE", str(path))
    return path


def test_key_follows_the_sources(source: Path, header_dir: Path) -> None:
    key = cache_key(source, header_dir)
    assert key == cache_key(SOURCE_DIR, header_dir)
    (source / "cxlrig-mem.c").write_text((source / "cxlrig-mem.c").read_text() + "\n")
    assert cache_key(source, header_dir) != key
    key2 = cache_key(source, header_dir)
    (source / "Makefile").write_text((source / "Makefile").read_text() + "\n")
    assert cache_key(source, header_dir) != key2


def test_build_then_cache_hit(source: Path, header_dir: Path, cache: Path) -> None:
    lib = build_plugin(source_dir=source, header_dir=header_dir)
    assert lib.name == LIBRARY and lib.parent.parent == cache / "plugin"
    assert lib.parent.name == cache_key(source, header_dir)
    assert (lib.parent / "build.log").is_file()
    mtime = lib.stat().st_mtime_ns
    assert build_plugin(source_dir=source, header_dir=header_dir) == lib
    assert lib.stat().st_mtime_ns == mtime
    assert build_plugin(force=True, source_dir=source, header_dir=header_dir) == lib
    assert sorted(p.name for p in (cache / "plugin").iterdir()) == [lib.parent.name]


def test_compiler_errors_are_reported(source: Path, header_dir: Path, cache: Path) -> None:
    src = source / "cxlrig-mem.c"
    src.write_text(src.read_text() + "\nstatic int unused_thing;\n")
    with pytest.raises(PluginBuildError) as err:
        build_plugin(source_dir=source, header_dir=header_dir)
    # -Werror: a warning is a failure, and the compiler's words reach the user.
    assert "unused_thing" in str(err.value) and "unused_thing" in err.value.output
    assert list((cache / "plugin").iterdir()) == []


def test_missing_header_is_explained(source: Path, tmp_path: Path) -> None:
    with pytest.raises(PluginBuildError, match=r"qemu-plugin\.h not found"):
        cache_key(source, tmp_path)
