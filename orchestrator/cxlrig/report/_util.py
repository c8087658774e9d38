"""Small helpers the report writers share: text made safe to show."""

from __future__ import annotations

import json
import re
from typing import Any

# Characters XML 1.0 cannot carry at all (even escaped), plus the C1 controls and
# DEL, which a page would show as nothing: a guest console writes all of them.
_UNSHOWABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def showable(text: str) -> str:
    """``text`` with control characters spelled out (``\\x1b``) so none is lost or invalid."""
    return _UNSHOWABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def json_value(value: Any, limit: int = 200) -> str:
    """A JSON value as one short line, for expected and actual values."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
