"""What the guest kernel reports about CXL faults, read through tracefs and sysfs.

Linux 6.12 reports CXL poison records, event records (general media, DRAM,
memory module) and AER errors of a memdev only as trace events of the
``cxl`` system. :class:`TraceWindow` captures them for the length of one
fault step: :meth:`TraceWindow.arm` clears the buffer and enables the
events, :meth:`TraceWindow.collect` waits until the expected events came
(they arrive from an interrupt thread after QEMU raised the interrupt) and
reads them twice: with tracefs' ``fields`` option, every field as the raw
number the kernel stored, and in the event's own format, which is what a
person reads (and the only place byte arrays such as ``comp_id`` show).
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from cxlrig.errors import CheckFailed
from cxlrig.guest.session import GuestSession

TRACEFS = "/sys/kernel/tracing"
CXL_DEVICES = "/sys/bus/cxl/devices"
#: Between the two renderings of one buffer in :meth:`TraceWindow.collect`.
_SPLIT = "=====cxlrig-trace-split====="
#: How often collect() looks again for the events it waits for.
_POLL_S = 0.25

# `  kworker/u4:1-40  [000] ..... 12.345678: cxl_poison: memdev=mem0 ...`
_LINE = re.compile(r"^.*?\s(?P<ts>\d+\.\d+): (?P<event>[a-z0-9_]+):(?P<rest>.*)$")
_FIELD = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=")
_NUMBER = re.compile(r"^0x(?P<hex>[0-9a-f]+) \((?P<dec>-?\d+)\)$")
_BYTE = re.compile(r"^(?:'.')?\((?P<dec>-?\d+)\)$")
# `__print_hex` renders a byte array as "63 78 6c 00 ...".
_HEX_BYTES = r"((?:[0-9a-f]{2} )*[0-9a-f]{2})"
_SIGNED = re.compile(r"events/cxl/(?P<event>[a-z0-9_]+)/format:\s*field:[^;]*?\s(?P<name>\w+);"
                     r".*\ssize:(?P<size>\d+);\s*signed:1;")


class TraceUnavailable(CheckFailed):
    """The guest kernel has no tracefs or no CXL trace events."""


@dataclass(frozen=True)
class TraceRecord:
    """One trace event as the guest kernel logged it."""

    event: str
    timestamp: float
    #: Every field the kernel stored, as a number or a string; fields tracefs
    #: cannot print raw (UUIDs, byte arrays) are absent here.
    fields: dict[str, Any]
    #: The event in its own format, as ``cat trace`` shows it.
    text: str
    #: Byte arrays the event's format prints in hex (``comp_id``, ``cor_mask``).
    arrays: dict[str, bytes] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = {"event": self.event, "timestamp": self.timestamp, **self.fields,
               "text": self.text}
        out.update({k: v.hex() for k, v in self.arrays.items()})
        return out


def _value(raw: str, size: int | None) -> Any:
    """One field's value; ``size`` is the byte width of a signed field (None: unsigned).

    tracefs prints every number through an unsigned cast of its width
    (``0xffef (65519)`` for an s16 of -17): the sign comes from the format.
    """
    raw = raw.strip()
    m = _NUMBER.match(raw) or _BYTE.match(raw)
    if m:
        value = int(m.group("hex"), 16) if "hex" in m.groupdict() else int(m.group("dec"))
        if size is not None and value >= 1 << (8 * size - 1):
            value -= 1 << (8 * size)
        return value
    if raw.startswith("<") and raw.endswith(">"):
        return None  # <INVALID-SIZE>, <OVERFLOW>: not printable raw
    return raw


def parse_fields(rest: str, signed: dict[str, int] | None = None) -> dict[str, Any]:
    """``name=value`` pairs of one event printed with tracefs' ``fields`` option;
    ``signed`` gives the byte width of each signed field."""
    out: dict[str, Any] = {}
    marks = list(_FIELD.finditer(rest))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(rest)
        value = _value(rest[m.end():end], (signed or {}).get(m.group(1)))
        if value is not None:
            out[m.group(1)] = value
    return out


def parse_signed(formats: str) -> dict[str, dict[str, int]]:
    """Per event, the fields its ``format`` file marks ``signed:1``, with their size."""
    found: dict[str, dict[str, int]] = {}
    for line in formats.splitlines():
        m = _SIGNED.search(line)
        if m:
            found.setdefault(m.group("event"), {})[m.group("name")] = int(m.group("size"))
    return found


def _arrays(text: str) -> dict[str, bytes]:
    out = {}
    for name in ("comp_id", "cor_mask"):
        m = re.search(rf"(?:^|\s){name}={_HEX_BYTES}(?:\s|$)", text)
        if m:
            out[name] = bytes.fromhex(m.group(1).replace(" ", ""))
    return out


def parse_trace(raw: str, text: str, signed: dict[str, dict[str, int]]) -> list[TraceRecord]:
    """Records from one buffer read with ``fields`` on (``raw``) and off (``text``).

    Both reads list the same events in the same order; header lines (``#``)
    and lines that are no event are skipped.
    """
    def events(dump: str) -> list[re.Match[str]]:
        return [m for line in dump.splitlines()
                if not line.startswith("#") and (m := _LINE.match(line))]

    raws, texts = events(raw), events(text)
    out = []
    for i, m in enumerate(raws):
        name = m.group("event")
        shown = texts[i].group("rest").strip() if i < len(texts) and \
            texts[i].group("event") == name else ""
        out.append(TraceRecord(event=name, timestamp=float(m.group("ts")),
                               fields=parse_fields(m.group("rest"),
                                                   signed.get(name)),
                               text=shown, arrays=_arrays(shown)))
    return out


_ARM = f"""
t={TRACEFS}
[ -e $t/trace ] || mount -t tracefs nodev $t 2>/dev/null || {{ echo "no tracefs" >&2; exit 3; }}
[ -e $t/events/cxl/enable ] || {{ echo "no CXL trace events in this kernel" >&2; exit 4; }}
echo 0 > $t/tracing_on
echo 0 > $t/options/fields
echo > $t/trace
echo 1 > $t/events/cxl/enable
echo 1 > $t/tracing_on
dmesg | wc -l
"""

_COUNT = f"grep -c -E ': ({{events}}):' {TRACEFS}/trace"

_READ = f"""
t={TRACEFS}
echo 1 > $t/options/fields; cat $t/trace; echo 0 > $t/options/fields
echo {_SPLIT}; cat $t/trace
echo {_SPLIT}; grep -H 'signed:1' $t/events/cxl/*/format
echo {_SPLIT}; dmesg | tail -n +{{start}}
"""


@dataclass(frozen=True)
class Observed:
    """What the guest showed between arm() and collect()."""

    records: tuple[TraceRecord, ...]
    #: Kernel log lines that appeared meanwhile.
    dmesg: tuple[str, ...]
    #: Seconds from collect() being called until the awaited events were there
    #: (or it gave up).
    waited: float
    #: The awaited events that never came.
    missing: tuple[str, ...] = ()


class TraceWindow:
    """The CXL trace events and kernel log lines of one fault step."""

    def __init__(self, session: GuestSession) -> None:
        self.session = session
        self._dmesg_start = 1

    def arm(self) -> None:
        res = self.session.run(_ARM, timeout=None)
        if res.status in (3, 4):
            raise TraceUnavailable(f"cannot trace CXL events in the guest: "
                                   f"{res.stderr.strip()} (the kernel needs CONFIG_FTRACE "
                                   "and CONFIG_ENABLE_DEFAULT_TRACERS)")
        if res.status != 0:
            raise TraceUnavailable(f"arming the trace failed ({res.status}): {res.stderr}")
        lines = res.stdout.strip().splitlines()
        self._dmesg_start = int(lines[-1]) + 1 if lines and lines[-1].isdigit() else 1

    def collect(self, expect: dict[str, int], settle: float,
                log_text: str | None = None) -> Observed:
        """Wait up to ``settle`` s until each event in ``expect`` was logged that
        many times (and the kernel log shows ``log_text``), then read everything
        that was logged."""
        start = time.monotonic()
        wanted = {k: v for k, v in expect.items() if v > 0}
        checks = [f"echo {e} $({_COUNT.format(events=e)})" for e in wanted]
        if log_text is not None:
            checks.append(f"echo log $(dmesg | tail -n +{self._dmesg_start} | "
                          f"grep -c -F -e {shlex.quote(log_text)})")
        while checks:
            res = self.session.run(" ; ".join(checks), timeout=None)
            counts = {w[0]: int(w[1]) for line in res.stdout.splitlines()
                      if len(w := line.split()) == 2 and w[1].isdigit()}
            if all(counts.get(e, 0) >= n for e, n in wanted.items()) and \
                    (log_text is None or counts.get("log", 0) > 0):
                break
            if time.monotonic() - start > settle:
                break
            time.sleep(_POLL_S)
        waited = time.monotonic() - start
        res = self.session.run(_READ.format(start=self._dmesg_start), timeout=None)
        parts = res.stdout.split(_SPLIT + "\n")
        while len(parts) < 4:
            parts.append("")
        records = parse_trace(parts[0], parts[1], parse_signed(parts[2]))
        have: dict[str, int] = {}
        for r in records:
            have[r.event] = have.get(r.event, 0) + 1
        missing = tuple(e for e, n in wanted.items() if have.get(e, 0) < n)
        return Observed(records=tuple(records),
                        dmesg=tuple(line for line in parts[3].splitlines() if line.strip()),
                        waited=waited, missing=missing)


def dpa_bases(session: GuestSession, decoders: tuple[str, ...]) -> dict[str, int]:
    """Endpoint decoder -> the start of the device capacity it decodes (dpa_resource)."""
    res = session.run(" ; ".join(f"echo {d} $(cat {CXL_DEVICES}/{d}/dpa_resource)"
                                 for d in decoders), timeout=None, check=True)
    out = {}
    for line in res.stdout.splitlines():
        words = line.split()
        if len(words) == 2:
            out[words[0]] = int(words[1], 0)
    missing = [d for d in decoders if d not in out]
    if missing:
        raise CheckFailed(f"no dpa_resource for the endpoint decoders {', '.join(missing)}: "
                          f"{res.stdout.strip()!r}")
    return out


def trigger_poison_list(session: GuestSession, memdev: str) -> int:
    """Ask the kernel to read ``memdev``'s poison list (one cxl_poison event a record)."""
    return session.run(f"echo 1 > {CXL_DEVICES}/{memdev}/trigger_poison_list",
                       timeout=None).status
