"""The HTML report as a browser draws it: headless Chromium takes a screenshot.

Skipped when no ``chromium`` is installed (the set-up script installs it).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from cxlrig.report.html import render

FIXTURES = Path(__file__).parent / "report_fixtures"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1200, 3000


def _screenshot(page: Path, png: Path) -> None:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="cxlrig-chromium-") as profile:
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--screenshot={png}",
                f"--window-size={WIDTH},{HEIGHT}", page.resolve().as_uri()]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120, check=False)
    assert png.is_file(), f"no screenshot; chromium said:\n{proc.stderr[-2000:]}"


@pytest.mark.timeout(180)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_page_draws_in_a_browser(tmp_path: Path) -> None:
    results = Path(shutil.copytree(FIXTURES / "all-pass", tmp_path / "all-pass"))
    png = tmp_path / "report.png"
    _screenshot(render(results), png)
    assert png.stat().st_size > 50_000
    with Image.open(png) as im:
        assert im.size == (WIDTH, HEIGHT)
        rgb = im.convert("RGB")
        # The page is mostly white; the verdict badges are green; the plots
        # (from about a quarter down) have the blue and orange of the lines.
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100
        top = rgb.crop((0, 0, WIDTH, HEIGHT // 4))
        assert _count(top, lambda r, g, b: g > 100 and r < 60 and b < 90) > 100  # pass green
        plots = rgb.crop((0, HEIGHT // 5, WIDTH, HEIGHT // 2))
        assert _count(plots, lambda r, g, b: b > 150 and r < 40) > 100  # v1 blue line
        assert _count(plots, lambda r, g, b: r > 180 and 60 < g < 130 and b < 40) > 100  # v2


def _count(im: Image.Image, want: Callable[[int, int, int], bool]) -> int:
    """How many pixels of ``im`` (RGB) have a colour ``want`` accepts."""
    total = 0
    for n, colour in im.getcolors(maxcolors=1 << 20) or []:
        assert isinstance(colour, tuple)
        r, g, b = colour[:3]
        if want(r, g, b):
            total += n
    return total
