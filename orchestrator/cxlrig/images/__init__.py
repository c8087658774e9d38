"""Guest images built from source: the kernel variants, the initramfs and the
guest programs, each cached by the hash of what went into it (``cache``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cxlrig.errors import CxlrigError

if TYPE_CHECKING:
    from cxlrig.images.overlay import GuestFile
    from cxlrig.images.variants import Variant


@dataclass(frozen=True)
class GuestImage:
    """What a guest boots: a kernel, an initramfs and extra kernel arguments."""

    kernel: Path
    initrd: Path
    append: str = ""


def guest_image(variant: str | Variant, kernel: Path | str | None = None, append: str = "", *,
                progress: Callable[[str], None] | None = None,
                add: Sequence[GuestFile] = (), selftests: bool = False,
                tree: Path | None = None) -> GuestImage:
    """The kernel of ``variant`` (built if missing) or the bzImage ``kernel``,
    with the initramfs (built if missing) and the files ``add`` in it; with
    ``selftests``, the kernel's own selftests built next to it (not for a
    bzImage from elsewhere: it has no source tree). With ``tree``, the kernel is
    built from that tree (a user's series applied to a copy of it)."""
    from cxlrig.images.initramfs import build_initramfs
    from cxlrig.images.kernel import build_kernel
    from cxlrig.images.overlay import with_files

    if kernel is not None:
        path = Path(kernel)
        if not path.is_file():
            raise CxlrigError(f"--kernel {kernel}: no such file")
    else:
        path = build_kernel(variant, tree=tree, progress=progress)
        if selftests:
            from cxlrig.images.selftests import build_selftests

            build_selftests(variant, tree=tree, progress=progress)
    return GuestImage(path, with_files(build_initramfs(), add), append)
