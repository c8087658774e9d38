"""Topology -> QEMU command line, as a list of tokens. Pure: no I/O.

A reader can see a whole machine in the output; golden files pin it. Each
part of the machine has its own small function returning a list of tokens.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from cxlrig.qemu.firmware import cdat_tables, firmware_args
from cxlrig.topology import model as m
from cxlrig.topology.schema import format_size


@dataclass(frozen=True)
class Plugin:
    """A TCG plugin and its ``key=value`` arguments (order kept)."""

    path: PurePath
    args: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class QemuOptions:
    """How to run the machine: everything the topology does not say."""

    binary: str = "qemu-system-x86_64"
    accel: str = "tcg"  # resolved: "tcg" or "kvm"
    #: Single-threaded TCG: required whenever a plugin is loaded (QEMU 10.0.2
    #: aborted in iotlb_to_section with MTTCG and plugin address lookups).
    single_thread: bool = False
    paused: bool = False
    qmp_socket: PurePath | None = None
    #: ttyS0, the kernel console: written by QEMU straight to a file.
    console_log: PurePath | None = None
    #: ttyS1, the guest shell: a UNIX socket the session connects to, and
    #: QEMU's own log of everything the guest wrote on it.
    shell_socket: PurePath | None = None
    shell_log: PurePath | None = None
    kernel: PurePath | None = None
    initrd: PurePath | None = None
    append: str = ""
    plugin: Plugin | None = None
    #: Where the devices' CDAT files are (``DEVICE.cdat``, written by whoever
    #: runs the machine from :func:`cxlrig.qemu.firmware.cdat_tables`); None
    #: leaves every device QEMU's own CDAT.
    cdat_dir: PurePath | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)


def escape(value: str | PurePath) -> str:
    """Escape a value inside a QEMU ``key=value,...`` option (commas double)."""
    return str(value).replace(",", ",,")


def size_arg(n: int) -> str:
    """Bytes as QEMU reads them, in the largest whole unit."""
    return format_size(n, kilo="k")


def _opt(name: str, *parts: str, **kv: object) -> list[str]:
    items = list(parts) + [f"{k}={v}" for k, v in kv.items() if v is not None]
    return [name, ",".join(items)]


def cpu_ranges(cpus: Sequence[int]) -> list[str]:
    """``[0, 1, 2, 5]`` -> ``["0-2", "5"]`` (QEMU's ``cpus=`` takes one range each)."""
    out: list[str] = []
    for c in sorted(cpus):
        if out and "-" in out[-1] and int(out[-1].split("-")[1]) == c - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{c}"
        elif out and "-" not in out[-1] and int(out[-1]) == c - 1:
            out[-1] = f"{out[-1]}-{c}"
        else:
            out.append(str(c))
    return out


def machine_args(topo: m.Topology, opts: QemuOptions) -> list[str]:
    machine = "q35,cxl=on" if topo.has_cxl else "q35"
    accel = opts.accel
    if accel == "tcg" and opts.single_thread:
        accel = "tcg,thread=single"
    mem = f"{topo.memory // m.MiB}M"
    if topo.maxmem is not None:
        mem += f",slots=2,maxmem={topo.maxmem // m.MiB}M"
    return ["-machine", machine, "-accel", accel, "-smp", str(topo.cpus), "-m", mem,
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]


def numa_args(topo: m.Topology) -> list[str]:
    out: list[str] = []
    for n in topo.nodes:
        mid = f"ram-node{n.node}"
        out += _opt("-object", "memory-backend-ram", id=mid, size=size_arg(n.memory))
        cpus = "".join(f",cpus={r}" for r in cpu_ranges(n.cpus))
        out += ["-numa", f"node,nodeid={n.node},memdev={mid}{cpus}"]
    return out


def cxl_args(topo: m.Topology, cdat_dir: PurePath | None = None) -> list[str]:
    out: list[str] = []
    cdat = set(cdat_tables(topo)) if cdat_dir is not None else set()
    for hb in topo.host_bridges:
        out += _opt("-device", "pxb-cxl", bus_nr=hb.bus_nr, bus="pcie.0", id=hb.id)
    for rp in topo.root_ports:
        out += _opt("-device", "cxl-rp", port=rp.port, bus=rp.host_bridge, id=rp.id,
                    chassis=rp.chassis, slot=rp.slot)
    for sw in topo.switches:
        out += _opt("-device", "cxl-upstream", bus=sw.root_port, id=sw.id)
        for dsp in sw.downstream:
            out += _opt("-device", "cxl-downstream", port=dsp.port, bus=sw.id, id=dsp.id,
                        chassis=dsp.chassis, slot=dsp.slot)
    for d in topo.devices:
        if d.present:  # the others come later, through hotplug_commands()
            out += device_args(d, cdat_dir / f"{d.id}.cdat" if cdat_dir and d.id in cdat
                               else None)
    if topo.windows:
        # QEMU wants every cxl-fmw.* parameter in one option ("Parameters
        # 'cxl-fmw.*' used inconsistently" otherwise).
        out += ["-machine", ",".join(window_params(w) for w in topo.windows)]
    return out


def _device_parts(d: m.Device, cdat: PurePath | None) -> tuple[list[tuple[str, int]],
                                                                 dict[str, object]]:
    """A type-3 device's memory backends (id, size) and its -device properties."""
    backends: list[tuple[str, int]] = []
    kv: dict[str, object] = {"bus": d.bus}
    for size, memdev, key in ((d.volatile, d.volatile_memdev, "volatile-memdev"),
                              (d.persistent, d.persistent_memdev, "persistent-memdev"),
                              (d.lsa, d.lsa_memdev, "lsa"),
                              (d.dc_size, d.dc_memdev, "volatile-dc-memdev")):
        if size:
            backends.append((memdev, size))
            kv[key] = memdev
    if d.dc_size:
        kv["num-dc-regions"] = d.dc_regions
    if cdat is not None:
        kv["cdat"] = cdat
    kv["id"] = d.id
    kv["sn"] = d.serial
    return backends, kv


def device_args(d: m.Device, cdat: PurePath | None = None) -> list[str]:
    backends, kv = _device_parts(d, cdat)
    out: list[str] = []
    for memdev, size in backends:
        out += _opt("-object", "memory-backend-ram", id=memdev, size=size_arg(size))
    props = [f"{k}={escape(v) if isinstance(v, PurePath) else v}" for k, v in kv.items()
             if k != "sn"] + [f"sn={d.serial:#x}"]
    return [*out, "-device", ",".join(["cxl-type3", *props])]


def hotplug_commands(d: m.Device, cdat: PurePath | None = None, plug: int = 0
                     ) -> list[tuple[str, dict[str, Any]]]:
    """The QMP commands that plug ``d`` into its (empty) port of a running machine:
    its memory backends, then the device, with the properties -device would give.

    ``plug`` counts earlier plugs of the same device: QEMU 10 keeps a removed
    type-3 device's backends marked in use, so each plug gets backends of its own.
    """
    backends, kv = _device_parts(d, cdat)
    renamed = {memdev: memdev if not plug else f"{memdev}.{plug}" for memdev, _ in backends}
    out: list[tuple[str, dict[str, Any]]] = [
        ("object-add", {"qom-type": "memory-backend-ram", "id": renamed[memdev], "size": size})
        for memdev, size in backends]
    props = {k: str(v) if isinstance(v, PurePath) else renamed.get(str(v), v)
             for k, v in kv.items()}
    out.append(("device_add", {"driver": "cxl-type3", **props}))
    return out


def window_params(w: m.Window) -> str:
    prefix = f"cxl-fmw.{w.index}"
    parts = [f"{prefix}.targets.{i}={t}" for i, t in enumerate(w.targets)]
    parts += [f"{prefix}.size={size_arg(w.size)}",
              f"{prefix}.interleave-granularity={size_arg(w.granularity)}"]
    return ",".join(parts)


def plumbing_args(opts: QemuOptions) -> list[str]:
    """QMP, console, kernel, plugin: how the runner talks to the machine."""
    out: list[str] = []
    if opts.qmp_socket is not None:
        out += ["-chardev", f"socket,id=qmp,path={escape(opts.qmp_socket)},server=on,wait=off",
                "-mon", "chardev=qmp,mode=control"]
    if opts.console_log is not None:
        out += ["-chardev", f"file,id=con0,path={escape(opts.console_log)}",
                "-serial", "chardev:con0"]
    if opts.shell_socket is not None:
        if opts.console_log is None:
            out += ["-serial", "null"]  # keep the shell on ttyS1
        log = f",logfile={escape(opts.shell_log)}" if opts.shell_log else ""
        out += ["-chardev",
                f"socket,id=sh0,path={escape(opts.shell_socket)},server=on,wait=off{log}",
                "-serial", "chardev:sh0"]
    if opts.kernel is not None:
        out += ["-kernel", str(opts.kernel)]
        if opts.initrd is not None:
            out += ["-initrd", str(opts.initrd)]
        if opts.append:
            out += ["-append", opts.append]
    if opts.plugin is not None:
        args = "".join(f",{k}={escape(v)}" for k, v in opts.plugin.args)
        out += ["-plugin", f"{escape(opts.plugin.path)}{args}"]
    if opts.paused:
        out += ["-S"]
    return out


def build_argv(topo: m.Topology, opts: QemuOptions) -> list[str]:
    """The whole QEMU command line for ``topo`` run as ``opts`` says."""
    if opts.plugin is not None and opts.accel != "tcg":
        raise ValueError("TCG plugins need accel=tcg")
    return [opts.binary, *machine_args(topo, opts), *numa_args(topo),
            *cxl_args(topo, opts.cdat_dir), *firmware_args(topo), *plumbing_args(opts),
            *opts.extra]


def group_options(argv: Iterable[str]) -> list[list[str]]:
    """Group tokens as ``[flag, value]`` (or ``[flag]``) for printing."""
    tokens = list(argv)
    groups: list[list[str]] = [[tokens[0]]] if tokens else []
    for tok in tokens[1:]:
        if tok.startswith("-") or len(groups[-1]) == 2:
            groups.append([tok])
        else:
            groups[-1].append(tok)
    return groups


def format_argv(argv: Iterable[str]) -> str:
    """Shell-quoted, one option per line, ready to paste into a shell."""
    lines = [" ".join(shlex.quote(t) for t in g) for g in group_options(argv)]
    return " \\\n    ".join(lines) + "\n"
