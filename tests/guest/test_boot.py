"""Boot real guests under TCG: CXL regions become the NUMA nodes the YAML
says, and the guest session runs commands reliably."""

from __future__ import annotations

import pytest

from cxlrig.guest.boot import Guest
from cxlrig.guest.cxl import cxl_list
from cxlrig.guest.session import CommandFailed, GuestCrash, GuestError
from cxlrig.pytest_plugin import Want
from cxlrig.topology import load

from ..conftest import REPO
from .conftest import Boot

pytestmark = pytest.mark.guest

TOPOLOGIES = ["default", "direct-volatile", "cross-host-bridge", "switch-4way", "persistent-lsa",
              "numa-dram2-cxl", "tiered-dram3-cxl", "dynamic-capacity", "large", "hotplug"]


# The cxl_guest fixture of cxlrig's pytest plugin: one test, once per machine.
@pytest.mark.cxl(topology=TOPOLOGIES, variant="v2")
def test_guest_boot_numa_nodes_match_topology(cxl_guest: Guest, cxl_want: Want) -> None:
    topo = load(REPO / "topologies" / f"{cxl_want.topology}.yaml")
    guest = cxl_guest
    # bring_up already verified; assert the essentials here again, from the guest.
    # Regions waiting for a device that is absent at boot are not made (hotplug).
    assert {r.id for r in guest.regions} == {r.id for r in topo.booted_regions}
    ram = [r for r in topo.booted_regions if r.type == "ram"]
    for region in ram:
        node = guest.nodes[region.node]
        assert node.cpus == "", f"{region.id}: CXL node {region.node} has CPUs"
        expected = sum(r.size for r in ram if r.node == region.node)
        assert node.mem_total == expected
        assert node.distances[0] > node.distances[region.node], "remote must be farther"
    for dram in topo.nodes:
        assert abs(guest.nodes[dram.node].mem_total - dram.memory) < dram.memory * 0.1
    # 'cxl list' (ndctl's tool, not our sysfs reading) agrees.
    listed = cxl_list(guest.session)
    serials = {int(str(o["serial"]), 0) for o in listed if "memdev" in o}
    assert serials == {d.serial for d in topo.devices if d.present}
    listed_regions = {o["region"] for o in listed if "region" in o}
    assert listed_regions == {r.name for r in guest.regions}
    ports = guest.session.run("cxl list -P -u", check=True).stdout
    for _ in topo.host_bridges:
        assert '"port":"port' in ports
    out = guest.session.run("numactl -H", check=True).stdout
    assert f"available: {len(topo.nodes) + len({r.node for r in ram})} nodes" in out
    if any(r.type == "pmem" for r in topo.regions):
        # A persistent region binds through libnvdimm.
        nd = guest.session.run("ls /sys/bus/nd/devices", check=True).stdout.split()
        assert "region0" in nd and "ndbus0" in nd
    if ram:
        # The memory is really usable: write 1 MiB bound to the first CXL node.
        res = guest.session.run(f"numactl --membind={ram[0].node} dd if=/dev/zero "
                                "of=/dev/null bs=64K count=16 2>&1")
        assert res.ok, res.stdout


def test_guest_session_output_status_quoting_and_users(boot: Boot) -> None:
    with boot("direct-volatile") as guest:
        s = guest.session
        weird = "it's \"quoted\" $HOME `x` \\ back; | & * ü ✓"
        res = s.run(f"printf '%s\\n' {_sh_quote(weird)}; echo to-stderr >&2; exit 7")
        assert (res.status, res.stdout, res.stderr) == (7, weird + "\n", "to-stderr\n")
        # Output that looks like our markers or kernel messages is just output.
        res = s.run("echo '@@CXLRIG-RC-0000-0@@'; echo 'Kernel panic - not syncing: no'")
        assert res.ok and "@@CXLRIG-RC-0000-0@@" in res.stdout
        assert s.run("id -u", user="user").stdout.strip() == "1000"
        assert s.run("id -u").stdout.strip() == "0"
        # Large output and a command longer than a tty line (4095 bytes).
        big = s.run("i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done")
        assert big.stdout.splitlines()[-1] == "line-2999" and len(big.stdout.splitlines()) == 3000
        long_arg = "x" * 9000
        assert s.run(f"echo {long_arg} | wc -c").stdout.strip() == "9001"
        with pytest.raises(CommandFailed, match="status 3"):
            s.run("exit 3", check=True)
        # The session survives all of that.
        assert s.run("echo still-here").stdout == "still-here\n"


def test_guest_command_timeout_reports_console(boot: Boot) -> None:
    with boot("direct-volatile") as guest, pytest.raises(GuestError) as info:
        guest.session.run("sleep 30", timeout=2)
    text = str(info.value)
    assert "timed out after 2 s" in text and "sleep 30" in text
    # The error carries the kernel console's tail, read from the run's log.
    assert f"kernel console ({guest.machine.run_dir.console_log})" in text
    assert "crng init done" in text or "cxlrig: init done" in text


def test_guest_kernel_panic_is_detected(boot: Boot) -> None:
    # The init we ask for does not exist: the kernel panics before any shell.
    with pytest.raises(GuestCrash, match="Kernel panic"), boot(
            "direct-volatile", append="rdinit=/nonexistent init=/nonexistent"):
        pass


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def test_guest_accel_auto_proves_kvm_before_choosing_it(boot: Boot) -> None:
    from cxlrig.images.kernel import build_kernel
    from cxlrig.machine.accel import probe_kvm, resolve_accel

    kernel = build_kernel("v2")
    assert resolve_accel("auto", None).accel == "tcg"  # nothing to prove KVM with
    ok, detail = probe_kvm(kernel)
    assert detail, "the probe says what it saw"
    choice = resolve_accel("auto", kernel)
    assert choice.accel == ("kvm" if ok else "tcg") and choice.reason
    if ok:  # where KVM works, a proven KVM boots our machine too
        with boot("direct-volatile", accel="kvm") as guest:
            assert guest.session.run("true").ok
