"""YAML loading that remembers where every key and value stood in the file.

PyYAML's safe composer gives nodes with marks; we turn them into plain Python
data (dicts, lists, scalars resolved by the safe loader's rules) and a table
from key path to (line, column), so a later check can say
``file:line:col: path.to.key: message`` about any part of the document.

Every file the rig reads comes through here, so here is where hostile input
is bounded: its size, how deep it nests and how many nodes its aliases make
it expand to. Each is refused with a located problem before the work it would
cost is done.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

import yaml

#: Bytes in a file (characters in a text). The largest shipped file is about
#: 2 KB. PyYAML's scanner is pure Python: ~1 us a character in comments and
#: long strings, up to ~20 us where every other character is a node.
MAX_FILE_BYTES = 64 * 1024
#: Nodes the conversion visits, an aliased node counted again at each use:
#: what the document expands to. Shipped files have at most 260. Composing
#: costs up to ~40 us a node, so a file of tiny nodes meets the limit in
#: under half a second; without one, 324 bytes of aliases expanded to 9**9.
MAX_NODES = 10_000
#: Levels of nested sequences and mappings. Shipped files use 5; PyYAML's
#: composer and our converter recurse once per level.
MAX_DEPTH = 64

#: A path into the document: mapping keys and list indices.
Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located in it."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"


def format_path(path: Path) -> str:
    """``("cxl", "devices", 1, "volatile")`` -> ``cxl.devices[1].volatile``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class Located:
    """Document data plus the marks of its keys and values."""

    def __init__(self, file: str, data: Any, marks: dict[Path, Mark]) -> None:
        self.file = file
        self.data = data
        self.marks = marks

    def mark(self, path: Path) -> Mark:
        """The mark of ``path``, or of its nearest ancestor that has one."""
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path, Mark(1, 1))

    def problem(self, path: Path, message: str) -> Problem:
        m = self.mark(path)
        return Problem(self.file, m.line, m.col, format_path(path), message)


class YamlLoadError(Exception):
    """The file is not YAML we accept; carries the located problems."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def read_located(path: str | os.PathLike[str]) -> Located:
    """Read a UTF-8 file and parse it as :func:`load_located` does.

    Raise :class:`YamlLoadError` with located problems: the file cannot be
    read, is over MAX_FILE_BYTES (of which no more than the limit is read),
    is not UTF-8, or is not YAML we accept.
    """
    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                # A pipe or a device has no size; all we know then is what we read.
                st = os.fstat(f.fileno())
                what = f"{st.st_size} bytes" if stat.S_ISREG(st.st_mode) \
                    else f"more than {MAX_FILE_BYTES} bytes"
                raise YamlLoadError([Problem(name, 1, 1, "", f"file size {what} is over the "
                                             f"limit of {MAX_FILE_BYTES} bytes ({_kib()})")])
    except OSError as exc:
        raise YamlLoadError([Problem(name, 1, 1, "", f"cannot read: {exc.strerror or exc}")]) \
            from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[start:exc.start].decode("utf-8", errors="replace")) + 1
        raise YamlLoadError([Problem(name, line, col, "", f"not UTF-8 text: {exc.reason}")]) \
            from None
    # The newlines Path.read_text gives, so marks and scalars are what they were.
    return load_located(text.replace("\r\n", "\n").replace("\r", "\n"), name)


def _kib() -> str:
    return f"{MAX_FILE_BYTES // 1024} KiB"



def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Refused(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing documents that nest or expand past the limits.

    The checks sit in ``compose_node``, before PyYAML's composer recurses into
    a collection or hands back an aliased node: its recursion never goes past
    MAX_DEPTH, and a document is refused at the alias that would make it
    expand past MAX_NODES, before anything has walked the expansion. Since
    the conversion visits each composed node once per path to it, the count
    kept here is the number of nodes it will visit.
    """

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.depth = 0
        self.visits = 0
        #: For each anchored node once composed: how many nodes it expands to.
        self.expanded: dict[int, int] = {}
        self.path: list[str | int] = []

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        # The composer's check comes too late for flow collections: while a
        # '[' may still start a key, the scanner reads up to 1024 characters
        # ahead, each step a pass over every pending '[', so 20,000 of them
        # cost a third of a second before the composer sees the 65th. The
        # composer has not got here yet, so there is no path to name.
        if self.flow_level >= MAX_DEPTH:
            raise _refused_at(self.file, self.get_mark(), "", f"YAML: nesting deeper than "
                              f"{MAX_DEPTH} levels (the limit)")
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None,
                     index: int | yaml.Node | None) -> yaml.Node | None:
        # In a mapping, PyYAML passes None while composing a key and the key
        # node while composing its value.
        part: str | int | None = None
        if isinstance(index, int):
            part = index
        elif isinstance(index, yaml.ScalarNode):
            part = str(index.value)
        elif isinstance(index, yaml.Node):
            part = "?"
        if part is not None:
            self.path.append(part)
        try:
            return self._compose_bounded(parent, index)
        finally:
            if part is not None:
                self.path.pop()

    def _compose_bounded(self, parent: yaml.Node | None,
                         index: int | yaml.Node | None) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            # An undefined alias is left to PyYAML's own error.
            if target is not None:
                size = self.expanded.get(id(target))
                if size is None:
                    raise self._refused(event, f"YAML: recursive alias: *{event.anchor} is "
                                        "inside the node it names")
                self._count(size, event, f"YAML: alias *{event.anchor} makes the document "
                            f"expand past {MAX_NODES} nodes (the limit)")
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection and self.depth >= MAX_DEPTH:
            raise self._refused(event, f"YAML: nesting deeper than {MAX_DEPTH} levels "
                                "(the limit)")
        self._count(1, event, f"YAML: more than {MAX_NODES} nodes (the limit)")
        before = self.visits - 1
        self.depth += collection
        try:
            node = super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self.depth -= collection
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None and node is not None:
            self.expanded[id(node)] = self.visits - before
        return node

    def _count(self, nodes: int, event: yaml.Event, message: str) -> None:
        self.visits += nodes
        if self.visits > MAX_NODES:
            raise self._refused(event, message)

    def _refused(self, event: yaml.Event, message: str) -> _Refused:
        # Past a few levels the path is noise (a refused nesting has 64 of them).
        path = format_path(tuple(self.path[:8])) + ("..." if len(self.path) > 8 else "")
        return _refused_at(self.file, event.start_mark, path, message)


def _refused_at(file: str, m: Any, path: str, message: str) -> _Refused:
    line, col = (m.line + 1, m.column + 1) if m is not None else (1, 1)
    return _Refused(Problem(file, line, col, path, message))


#: What a scalar that failed to construct gives, told apart from null.
_FAILED = object()


def load_located(text: str, file: str) -> Located:
    """Parse ``text``; raise :class:`YamlLoadError` with located problems.

    A text longer than MAX_FILE_BYTES characters, nested deeper than
    MAX_DEPTH or expanding through aliases past MAX_NODES is refused.
    """
    if len(text) > MAX_FILE_BYTES:
        raise YamlLoadError([Problem(file, 1, 1, "", f"text size {len(text)} characters is "
                                     f"over the limit of {MAX_FILE_BYTES} ({_kib()})")])
    problems: list[Problem] = []
    marks: dict[Path, Mark] = {}
    try:
        loader = _BoundedLoader(text, file)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except _Refused as exc:
        raise YamlLoadError([exc.problem]) from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise YamlLoadError([Problem(file, line, col, "", f"YAML: character {exc.character:#x} "
                                     "is not allowed")]) from None
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        line, col = (m.line + 1, m.column + 1) if m is not None else (1, 1)
        what = exc.problem or str(exc)
        raise YamlLoadError([Problem(file, line, col, "", f"YAML syntax: {what}")]) from None
    except yaml.YAMLError as exc:
        raise YamlLoadError([Problem(file, 1, 1, "", f"YAML: {exc}")]) from None
    if root is None:
        return Located(file, None, {(): Mark(1, 1)})

    # A fresh loader only to resolve scalars with the safe loader's rules
    # (ints, bools, null, floats) exactly as yaml.safe_load would.
    resolver = yaml.SafeLoader("")

    def scalar(node: yaml.Node, path: Path) -> Any:
        try:
            return resolver.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            problems.append(Problem(file, *_pos(node), _fmt(path), f"YAML: {exc.problem}"))
        # The safe constructor lets Python's own errors out on scalars that look
        # like a type but are not one ("2001-13-45", "!!int x", 5000 digits).
        except Exception as exc:
            kind = node.tag.rsplit(":", 1)[-1]
            why = f" ({str(exc).split(';')[0]})" if type(exc) is ValueError else ""
            problems.append(Problem(file, *_pos(node), _fmt(path),
                                    f"YAML: {_short(node.value)} is not a valid {kind}{why}"))
        return _FAILED

    def convert(node: yaml.Node, path: Path) -> Any:
        marks.setdefault(path, _mark(node))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    problems.append(
                        Problem(file, *_pos(knode), _fmt(path), "mapping keys must be plain names")
                    )
                    continue
                key = scalar(knode, path)
                if key is _FAILED:
                    continue
                if not isinstance(key, str):
                    key = str(key)
                if key in out:
                    problems.append(
                        Problem(file, *_pos(knode), _fmt((*path, key)), "duplicate key")
                    )
                    continue
                marks[(*path, key)] = _mark(knode)
                out[key] = convert(vnode, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [convert(item, (*path, i)) for i, item in enumerate(node.value)]
        value = scalar(node, path)
        return None if value is _FAILED else value

    data = convert(root, ())
    resolver.dispose()
    if problems:
        raise YamlLoadError(problems)
    return Located(file, data, marks)


def _short(value: Any) -> str:
    text = str(value)
    return repr(text) if len(text) <= 40 else repr(text[:37]) + "..."


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _fmt(path: Path) -> str:
    return format_path(path)
