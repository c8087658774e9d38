"""Kernel variants as data: a patch series, config fragments, and how to judge it.

Every directory under ``guest/kernel/patches/`` is a built-in variant: its
``*.patch`` files in name order, on Debian's linux-source-6.12, with
``config.fragment``. A directory may hold a ``variant.yaml``:

.. code-block:: yaml

    series: v2                  # take the patches of another shipped series
    fragments: [../../debug.fragment]   # more fragments, relative to this file
    like: v2                    # a user's series: judge runs by v2's expectations
    scenarios: {unprivileged-caller: v1, thp: null}   # per-scenario overrides

(A shipped variant is always judged by its own expectations: ``like`` and
``scenarios`` are for a user's series.)

A user's series (``--series PATH``) is the same thing outside the checkout: a
directory of ``*.patch`` and ``*.mbox`` files (plus ``variant.yaml``), or one
mbox file (plus ``NAME.variant.yaml`` next to it) as ``git format-patch
--stdout`` or a mail archive writes it. Mails are split and decoded with git's
own ``mailsplit`` and ``mailinfo``, the parsers ``git am`` uses; messages
without a diff (a cover letter, replies) are left out.

A variant without ``like`` is run with no expectation: every check of every
known variant is evaluated and shown, and the verdict says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from cxlrig.errors import CheckFailed, CxlrigError
from cxlrig.paths import DATA_ROOT
from cxlrig.topology.yamlmarks import Located, Problem, YamlLoadError, read_located

KERNEL_DIR = DATA_ROOT / "guest" / "kernel"
PATCHES_DIR = KERNEL_DIR / "patches"
BASE_FRAGMENT = KERNEL_DIR / "config.fragment"
DEBUG_FRAGMENT = KERNEL_DIR / "debug.fragment"
DECLARATION = "variant.yaml"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]{0,39}$")


class UnknownVariantError(CxlrigError):
    """A kernel variant name that is not a built-in one."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        super().__init__(f"unknown kernel variant {variant!r}; known: {', '.join(VARIANTS)} "
                         "(or give a patch series with --series PATH)")


class VariantFileError(CheckFailed):
    """A variant declaration or series that cannot be used; located where it can be."""

    def __init__(self, problems: list[Problem] | str) -> None:
        self.problems = problems if isinstance(problems, list) else []
        super().__init__(problems if isinstance(problems, str)
                         else "\n".join(str(p) for p in problems))


class _Declaration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The variant whose expectations judge this one; None: no expectation.
    like: str | None = None
    #: Use the patches of this shipped series (with or instead of the directory's own).
    series: str | None = None
    #: Extra config fragments after config.fragment, relative to the declaration.
    fragments: list[str] = []
    #: Scenario name -> the variant that judges it here (null: no expectation).
    scenarios: dict[str, str | None] = {}


@dataclass(frozen=True)
class Variant:
    """What a variant is made of, and which variant's expectations judge it."""

    name: str
    #: Patch files and mboxes, in the order they apply.
    patches: tuple[Path, ...]
    fragments: tuple[Path, ...]
    like: str | None = None
    #: (scenario, variant or None) pairs overriding ``like`` for one scenario.
    overrides: tuple[tuple[str, str | None], ...] = ()
    #: The series the user gave (a directory or a file); None for a built-in.
    origin: Path | None = None

    def judge_as(self, scenario: str) -> str | None:
        """The variant whose expectations judge ``scenario`` on this kernel, or None."""
        return dict(self.overrides).get(scenario, self.like)

    @property
    def builtin(self) -> bool:
        return self.origin is None


def _patch_files(directory: Path) -> tuple[Path, ...]:
    return tuple(sorted([*directory.glob("*.patch"), *directory.glob("*.mbox")]))


def _declaration(path: Path) -> tuple[_Declaration, Located] | None:
    if not path.is_file():
        return None
    try:
        doc = read_located(path)
    except YamlLoadError as exc:
        raise VariantFileError(exc.problems) from None
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise VariantFileError([doc.problem((), "a variant declaration must be a mapping")])
    try:
        decl = _Declaration.model_validate(data)
    except ValidationError as exc:
        from cxlrig.topology.validate import shape_problems

        raise VariantFileError(shape_problems(doc, exc, _Declaration)) from None
    return decl, doc


def _make(name: str, directory: Path, own: tuple[Path, ...], found: tuple[_Declaration,
          Located] | None, known: tuple[str, ...], origin: Path | None) -> Variant:
    decl, doc = found if found is not None else (_Declaration(), None)
    problems: list[Problem] = []

    def bad(path: tuple[str | int, ...], message: str) -> None:
        if doc is not None:
            problems.append(doc.problem(path, message))

    patches = own
    if decl.series is not None:
        if decl.series not in known or not _patch_files(PATCHES_DIR / decl.series):
            bad(("series",), f"'{decl.series}' is not a shipped series ({', '.join(known)})")
        else:
            patches = _patch_files(PATCHES_DIR / decl.series) + own
    fragments = [BASE_FRAGMENT]
    for i, frag in enumerate(decl.fragments):
        path = (directory / frag).resolve()
        if not path.is_file():
            bad(("fragments", i), f"{frag}: no such file (relative to {directory})")
        fragments.append(path)
    for key, value in [(("like",), decl.like),
                       *((("scenarios", s), v) for s, v in decl.scenarios.items())]:
        if value is not None and value not in known:
            bad(key, f"'{value}' is not a variant to judge by ({', '.join(known)})")
    if problems:
        raise VariantFileError(problems)
    if not patches:
        raise VariantFileError(f"variant {name}: {directory} has no *.patch or *.mbox files "
                               "(and its variant.yaml names no series)")
    if origin is None:  # a shipped variant is judged by its own expectations
        return Variant(name, patches, tuple(fragments), name)
    return Variant(name, patches, tuple(fragments), decl.like,
                   tuple(decl.scenarios.items()), origin)


def _builtin_names() -> tuple[str, ...]:
    if not PATCHES_DIR.is_dir():
        return ()
    return tuple(sorted(d.name for d in PATCHES_DIR.iterdir()
                        if d.is_dir() and (_patch_files(d) or (d / DECLARATION).is_file())))


#: The built-in variants, one per directory under guest/kernel/patches/.
VARIANTS: tuple[str, ...] = _builtin_names()


def get_variant(name: str) -> Variant:
    """The built-in variant called ``name``."""
    if name not in VARIANTS:
        raise UnknownVariantError(name)
    directory = PATCHES_DIR / name
    return _make(name, directory, _patch_files(directory), _declaration(directory / DECLARATION),
                 VARIANTS, None)


def load_series(path: str | Path) -> Variant:
    """A user's series: a directory of patches and mboxes, or one mbox file."""
    p = Path(path).expanduser()
    if p.is_dir():
        name, own, decl_path = p.resolve().name, _patch_files(p), p / DECLARATION
    elif p.is_file():
        name, own = p.name.split(".")[0], (p.resolve(),)
        decl_path = p.with_name(f"{name}.variant.yaml")
    else:
        raise VariantFileError(f"--series {path}: no such file or directory")
    if not _NAME.match(name):
        raise VariantFileError(f"--series {path}: '{name}' cannot name a variant (letters, "
                               "digits and . _ + -, starting with a letter)")
    if name in VARIANTS:
        raise VariantFileError(f"--series {path}: '{name}' is the name of a built-in variant; "
                               "rename the directory or file")
    return _make(name, p.resolve() if p.is_dir() else p.resolve().parent,
                 tuple(f.resolve() for f in own), _declaration(decl_path), VARIANTS, p.resolve())


def resolve_variant(name_or_series: str | Variant) -> Variant:
    """A built-in variant by name, a :class:`Variant` as it is."""
    return name_or_series if isinstance(name_or_series, Variant) else get_variant(name_or_series)


# ---- patches, mails and how they apply --------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """One diff to apply: where it came from, its subject, and the diff itself."""

    origin: str
    subject: str
    diff: Path


_HEADER_END = re.compile(r"^(diff |--- |Index: )", re.MULTILINE)


def is_mail(path: Path) -> bool:
    """True for a mail or mbox (headers before the first diff), False for a plain diff."""
    text = path.read_text(encoding="utf-8", errors="replace")
    m = _HEADER_END.search(text)
    head = text[: m.start()] if m else text
    return bool(re.search(r"^(Subject|From): ", head, re.MULTILINE))


def _git() -> str:
    git = shutil.which("git")
    if git is None:
        raise CxlrigError("reading a mail-form patch needs git (mailsplit, mailinfo)")
    return git


def _git_run(argv: list[str], cwd: Path, stdin: Path | None = None) -> str:
    with open(stdin, "rb") if stdin is not None else open("/dev/null", "rb") as fin:
        proc = subprocess.run(argv, cwd=cwd, stdin=fin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise CxlrigError(f"'{' '.join(argv[1:3])}' failed ({proc.returncode}): "
                          f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def split_patches(files: tuple[Path, ...], scratch: Path) -> list[Patch]:
    """Every diff of ``files``, in order: mails decoded as ``git am`` reads them."""
    out: list[Patch] = []
    for n, f in enumerate(files):
        if not is_mail(f):
            out.append(Patch(f.name, f.name, f))
            continue
        git = _git()
        where = scratch / f"mail-{n}"
        where.mkdir(parents=True)
        # --keep-cr: a patch that changes CRLF files must survive the split.
        count = int(_git_run([git, "mailsplit", "--keep-cr", "-o" + str(where), str(f)],
                             where).strip() or "0")
        for i in range(1, count + 1):
            msg = where / f"{i:04d}"
            diff, info = where / f"{i:04d}.diff", where / f"{i:04d}.info"
            meta = _git_run([git, "mailinfo", str(info), str(diff)], where, stdin=msg)
            subject = next((ln[9:] for ln in meta.splitlines() if ln.startswith("Subject: ")),
                           "")
            if "\ndiff " not in "\n" + diff.read_text(encoding="utf-8", errors="replace"):
                continue  # a cover letter or a reply: nothing to apply
            origin = f.name if count == 1 else f"{f.name}, message {i}"
            out.append(Patch(origin, subject, diff))
    return out
