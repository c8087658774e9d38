"""move_phys_pages in a real guest: a root process's page moves DRAM -> CXL
-> DRAM by physical address, pagemap and move_pages agree each time; the
unprivileged user is refused on v2 and allowed on v1 (the hole the
reviewers found)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cxlrig.guest.session import GuestSession

from .conftest import Boot, run_json

pytestmark = pytest.mark.guest


class Held:
    """A root process holding one anonymous page, inspected from outside."""

    def __init__(self, s: GuestSession) -> None:
        self.s = s
        s.run("rm -f /tmp/go /tmp/ready; mpp hold --pages 1 --until-file /tmp/go "
              "--ready-file /tmp/ready --timeout 300 > /tmp/hold.json 2>&1 &", check=True)
        s.run("i=0; while [ ! -s /tmp/ready ] && [ $i -lt 100 ]; do sleep 0.1; "
              "i=$((i+1)); done", check=True)
        ready = json.loads(s.run("cat /tmp/ready", check=True).stdout)
        self.pid: int = ready["pid"]
        self.va: str = ready["pages"][0]["va"]
        self.first = ready["pages"][0]

    def view(self) -> dict[str, Any]:
        """The page as move_pages (status mode) and /proc/PID/pagemap see it."""
        data = run_json(self.s, f"mpp virt --pid {self.pid} --va {self.va} --status")
        page: dict[str, Any] = data["before"]["pages"][0]
        page["move_pages_status"] = data["first_call"]["status"][0]
        return page

    def release(self) -> dict[str, Any]:
        self.s.run("touch /tmp/go; wait", check=True)
        lines = self.s.run("cat /tmp/hold.json", check=True).stdout.splitlines()
        after: dict[str, Any] = json.loads(lines[-1])
        return after


def phys(s: GuestSession, pa: str, to: int, user: str = "root") -> dict[str, Any]:
    call: dict[str, Any] = run_json(s, f"mpp phys --pa {pa} --to {to}", user=user)["first_call"]
    return call


def test_guest_v2_page_round_trip_by_physical_address(boot: Boot) -> None:
    with boot("default", "v2") as guest:
        s = guest.session
        cxl_node = 1
        base = guest.window_bases["cfmw0"]
        held = Held(s)
        assert held.first["node"] == 0 and held.first["pfn"]
        pa0 = held.first["pa"]

        call = phys(s, pa0, cxl_node)
        assert (call["ret"], call["status"]) == (0, [cxl_node])
        on_cxl = held.view()
        assert on_cxl["node"] == cxl_node and on_cxl["move_pages_status"] == cxl_node
        assert on_cxl["pfn"] != held.first["pfn"], "the physical address must change"
        assert base <= int(on_cxl["pa"], 16) < base + (4 << 30), "now inside the CXL window"

        call = phys(s, on_cxl["pa"], 0)
        assert (call["ret"], call["status"]) == (0, [0])
        back = held.view()
        assert back["node"] == 0 and back["move_pages_status"] == 0
        assert back["pfn"] != on_cxl["pfn"]

        # move_pages by virtual address on the same page agrees with both.
        moved = run_json(s, f"mpp virt --pid {held.pid} --va {held.va} --to {cxl_node}")
        assert moved["first_call"]["status"] == [cxl_node]
        assert held.view()["node"] == cxl_node

        # The unprivileged user gets EPERM from v2, and the page stays put.
        pa = held.view()["pa"]
        call = phys(s, pa, 0, user="user")
        assert (call["ret"], call["errno"]) == (-1, "EPERM")
        assert held.view()["node"] == cxl_node
        status_only = run_json(s, f"mpp phys --pa {pa} --status", user="user")["first_call"]
        assert status_only["errno"] == "EPERM", "v2 must not leak the node either"

        after = held.release()
        assert after["data_ok"] is True, "contents must survive three moves"


def test_guest_v1_lets_the_unprivileged_user_move_roots_page(boot: Boot) -> None:
    with boot("default", "v1") as guest:
        s = guest.session
        held = Held(s)
        pa0 = held.first["pa"]
        # uid 1000 cannot read PFNs from pagemap, but can name any PA it learns.
        status_only = run_json(s, f"mpp phys --pa {pa0} --status", user="user")["first_call"]
        assert (status_only["ret"], status_only["status"]) == (0, [0]), "v1 leaks the node"
        call = phys(s, pa0, 1, user="user")
        assert (call["ret"], call["status"]) == (0, [1])
        view = held.view()
        assert view["node"] == 1 and view["move_pages_status"] == 1
        assert held.release()["data_ok"] is True
