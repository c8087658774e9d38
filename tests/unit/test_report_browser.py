"""The HTML report as a browser draws it: headless Chromium takes a screenshot.

Skipped when no ``chromium`` is installed (the set-up script installs it).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from cxlrig.report.html import render

from .browser import CHROMIUM, MISSING, chromium, count_pixels

FIXTURES = Path(__file__).parent / "report_fixtures"
WIDTH, HEIGHT = 1200, 3000


def _screenshot(fixture: str, tmp_path: Path) -> Path:
    """The report of a fixture's results as Chromium draws it: the PNG's path."""
    results = Path(shutil.copytree(FIXTURES / fixture, tmp_path / fixture))
    png = tmp_path / "report.png"
    proc = chromium(f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}",
                    render(results).resolve().as_uri())
    assert png.is_file(), f"no screenshot; chromium said:\n{proc.stderr[-2000:]}"
    return png


@pytest.mark.timeout(180)
@pytest.mark.skipif(CHROMIUM is None, reason=MISSING)
def test_the_page_draws_in_a_browser(tmp_path: Path) -> None:
    png = _screenshot("all-pass", tmp_path)
    assert png.stat().st_size > 50_000
    with Image.open(png) as im:
        assert im.size == (WIDTH, HEIGHT)
        rgb = im.convert("RGB")
        # The page is mostly white; the verdict badges are green; the plots
        # (from about a quarter down) have the blue and orange of the lines.
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100
        top = rgb.crop((0, 0, WIDTH, HEIGHT // 4))
        assert count_pixels(top, lambda r, g, b: g > 100 and r < 60 and b < 90) > 100  # pass green
        plots = rgb.crop((0, HEIGHT // 5, WIDTH, HEIGHT // 2))
        assert count_pixels(plots, lambda r, g, b: b > 150 and r < 40) > 100  # v1 blue line
        assert count_pixels(plots, lambda r, g, b: r > 180 and 60 < g < 130 and b < 40) > 100  # v2


def _near(colour: str, tolerance: int = 40) -> Callable[[int, int, int], bool]:
    want = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return lambda r, g, b: all(abs(a - w) <= tolerance for a, w in zip((r, g, b), want,
                                                                       strict=True))


@pytest.mark.timeout(180)
@pytest.mark.skipif(CHROMIUM is None, reason=MISSING)
def test_the_tiering_plot_draws_every_policy(tmp_path: Path) -> None:
    from cxlrig.report.plots import PALETTE

    with Image.open(_screenshot("tiering", tmp_path)) as im:
        rgb = im.convert("RGB")
    # Five policies, five line colours (the none line lies along 0 %, the others
    # rise to 100 %: each still draws its markers).
    for colour in PALETTE[:5]:
        assert count_pixels(rgb, _near(colour)) > 50, colour
