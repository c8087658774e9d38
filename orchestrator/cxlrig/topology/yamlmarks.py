"""YAML loading that remembers where every key and value stood in the file.

PyYAML's safe composer gives nodes with marks; we turn them into plain Python
data (dicts, lists, scalars resolved by the safe loader's rules) and a table
from key path to (line, column), so a later check can say
``file:line:col: path.to.key: message`` about any part of the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

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


_constructor = yaml.SafeLoader.construct_scalar


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


#: What a scalar that failed to construct gives, told apart from null.
_FAILED = object()


def load_located(text: str, file: str) -> Located:
    """Parse ``text``; raise :class:`YamlLoadError` with located problems."""
    problems: list[Problem] = []
    marks: dict[Path, Mark] = {}
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
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

    active: set[int] = set()

    def convert(node: yaml.Node, path: Path) -> Any:
        marks.setdefault(path, _mark(node))
        if id(node) in active:
            problems.append(Problem(file, *_pos(node), _fmt(path), "YAML: recursive alias"))
            return None
        active.add(id(node))
        try:
            return convert_node(node, path)
        finally:
            active.discard(id(node))

    def convert_node(node: yaml.Node, path: Path) -> Any:
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
