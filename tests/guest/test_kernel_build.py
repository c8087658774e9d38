"""Builds the v1 and v2 kernels for real (slow: minutes on a cold cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxlrig.images.kernel import build_kernel, kernel_path, read_config

pytestmark = pytest.mark.guest


def _is_bzimage(image: Path) -> bool:
    # The x86 boot protocol: 0xAA55 at 0x1fe and the "HdrS" magic at 0x202.
    head = image.read_bytes()[:0x206]
    return len(head) == 0x206 and head[0x1FE:0x200] == b"\x55\xaa" and head[0x202:] == b"HdrS"


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_build_kernel_variant_has_move_phys_pages(variant: str) -> None:
    image = build_kernel(variant)

    assert image.is_file() and _is_bzimage(image), image
    assert kernel_path(variant) == image
    symbols = {line.split()[-1] for line in (image.parent / "System.map").read_text().splitlines()}
    assert {"__x64_sys_move_phys_pages", "__ia32_sys_move_phys_pages"} <= symbols
    config = read_config(image.parent / "config")
    assert config.get("CONFIG_CXL_REGION") == "y"
    assert "CONFIG_MODULES" not in config
