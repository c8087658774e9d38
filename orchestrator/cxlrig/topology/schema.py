"""The topology file's schema: what a user may write, as typed models.

These models check shape and types only (unknown keys, wrong types, sizes
that do not parse). Cross-references and what QEMU or the kernel would refuse
are checked in :mod:`cxlrig.topology.validate`, which also resolves the
derived values into :mod:`cxlrig.topology.model`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: object) -> int:
    """``256M``, ``4GiB``, ``16K`` or a plain number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 256M or 4G, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2).upper()]
        raise ValueError(f"not a size: {value!r} (use bytes or a number with K, M, G or T)")
    raise ValueError(f"expected a size such as 256M or 4G, got {type(value).__name__}")


def format_size(n: int, kilo: str = "K") -> str:
    """Bytes in the largest whole unit (``256M``), as :func:`parse_size` reads them;
    ``kilo`` is how the KiB unit is spelled (QEMU wants ``k``)."""
    for unit, mult in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), (kilo, 1 << 10)):
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


Size = Annotated[int, BeforeValidator(parse_size)]
#: User-chosen names become QEMU ids: QEMU wants a letter first, then
#: letters, digits, '-' or '_' (we keep '.' for the ids we derive).
Ident = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Performance(_Strict):
    """Figures later stages use (the plugin's latency model, HMAT)."""

    read_latency: Annotated[int, Field(gt=0, le=100_000)] | None = None  # ns
    write_latency: Annotated[int, Field(gt=0, le=100_000)] | None = None  # ns
    read_bandwidth: Annotated[int, Field(gt=0)] | None = None  # MB/s
    write_bandwidth: Annotated[int, Field(gt=0)] | None = None  # MB/s


class DramNode(_Strict):
    memory: Size
    cpus: list[Annotated[int, Field(ge=0)]] | None = None
    performance: Performance | None = None


class MachineSpec(_Strict):
    cpus: Annotated[int, Field(ge=1, le=64)] = 1
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    maxmem: Size | None = None
    nodes: Annotated[list[DramNode], Field(min_length=1, max_length=8)]


class HostBridgeSpec(_Strict):
    id: Ident
    bus_nr: Annotated[int, Field(ge=1, le=254)] | None = None


class RootPortSpec(_Strict):
    id: Ident
    host_bridge: Ident
    port: Annotated[int, Field(ge=0, le=255)] | None = None


class SwitchSpec(_Strict):
    id: Ident
    root_port: Ident
    ports: Annotated[int, Field(ge=1, le=32)]


class DynamicCapacitySpec(_Strict):
    size: Size
    regions: Annotated[int, Field(ge=1, le=8)] = 1


class DeviceSpec(_Strict):
    id: Ident
    attach: Ident  # a root port or a switch
    port: Annotated[int, Field(ge=0)] | None = None  # downstream port, with a switch
    volatile: Size = 0
    persistent: Size = 0
    lsa: Size | None = None
    serial: Annotated[int, Field(ge=0, lt=1 << 64)] | None = None
    dynamic_capacity: DynamicCapacitySpec | None = None
    #: false: the port is empty at boot; a scenario's hotplug step adds the device.
    present: bool = True


class WindowSpec(_Strict):
    id: Ident
    targets: Annotated[list[Ident], Field(min_length=1)]
    size: Size
    granularity: Size = 256


class RegionSpec(_Strict):
    id: Ident
    window: Ident
    type: Literal["ram", "pmem"] = "ram"
    devices: Annotated[list[Ident], Field(min_length=1)]
    ways: int | None = None
    granularity: Size | None = None
    size: Size | None = None
    online: Literal["movable", "normal", "offline", "devdax"] | None = None
    performance: Performance | None = None


class CxlSpec(_Strict):
    host_bridges: list[HostBridgeSpec] = []
    root_ports: list[RootPortSpec] = []
    switches: list[SwitchSpec] = []
    devices: list[DeviceSpec] = []
    windows: list[WindowSpec] = []
    regions: list[RegionSpec] = []


class TopologySpec(_Strict):
    name: Ident
    description: str = ""
    machine: MachineSpec
    cxl: CxlSpec = CxlSpec()
