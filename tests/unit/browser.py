"""Headless Chromium for the tests of pages we write: one way to start it, one pixel count."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable

from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "chromium is not installed (apt-get install chromium)"


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a fresh profile and no network chatter."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="cxlrig-chromium-") as profile:
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--hide-scrollbars",
                f"--user-data-dir={profile}", *args]
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120, check=False)


def count_pixels(im: Image.Image, want: Callable[[int, int, int], bool]) -> int:
    """How many pixels of ``im`` (RGB) have a colour ``want`` accepts."""
    total = 0
    for n, colour in im.getcolors(maxcolors=1 << 20) or []:
        assert isinstance(colour, tuple)
        r, g, b = colour[:3]
        if want(r, g, b):
            total += n
    return total
