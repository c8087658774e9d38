"""A page decoded to device and DPA by the rig (page_of) lands where the plugin
attributes writes to that page, and the kernel translates the DPA back to the
page: three independent decodes of the same interleave agree. Checked on the
4-way switch (1 KiB granules: one page spans four devices) and across two
host bridges (the window interleaves, each bridge passes through)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cxlrig.cli import main
from cxlrig.results import Step
from cxlrig.scenario.faults import recheck

pytestmark = pytest.mark.guest

#: (page, offset): 1 KiB steps over two pages reach every device of both machines.
LINES = [(page, offset) for page in (0, 1) for offset in (0, 1024, 2048, 3072)]


def scenario() -> str:
    steps = ["  - {id: wl, run: 'cxlrig-hold wl --pages 2 --node ${cxl_node}', json: true, "
             "check: true}",
             "  - {id: idle, mark: idle}"]
    for page, offset in LINES:
        at = f"(${{wl.pages[{page}].pa}} + {offset}) / 64"
        steps += [
            # 512 bytes through /dev/mem: every write to one 1 KiB granule.
            f"  - {{id: w{page}_{offset}, run: 'dd if=/dev/zero of=/dev/mem bs=64 count=8 "
            f"seek=$(( {at} ))', check: true}}",
            f"  - {{id: m{page}_{offset}, mark: p{page}_{offset}}}",
            f"  - id: e{page}_{offset}",
            "    inject:",
            "      event:",
            "        general_media:",
            f"          page_of: wl.pages[{page}].pa",
            f"          offset: {offset}",
            f"          component_id: line-{page}-{offset}",
        ]
    return "\n".join([
        "name: fault-decode",
        "title: page_of, the plugin and the kernel decode one page alike",
        "point: decode",
        "variants: [v2]",
        "requires: {ram_regions: 1}",
        "plugin: {}",
        "steps:", *steps]) + "\n"


@pytest.mark.parametrize("topology", ["switch-4way", "cross-host-bridge"])
def test_guest_page_of_decode_matches_plugin_and_kernel(tmp_path: Path, topology: str,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    path = tmp_path / "fault-decode.yaml"
    path.write_text(scenario())
    results = tmp_path / "results"
    status = main(["run", str(path), "--topology", topology, "--results", str(results)])
    out = capsys.readouterr().out
    run, = json.loads((results / "results.json").read_text())["runs"]
    assert status == 0 and run["verdict"] == "pass", out
    steps = {s["id"]: s for s in run["steps"]}
    targets = []
    for page, offset in LINES:
        written = steps[f"m{page}_{offset}"]["data"]["devices"]
        busiest = max(written, key=lambda d: written[d]["writes"])
        assert written[busiest]["writes"] >= 64, written
        event = steps[f"e{page}_{offset}"]["data"]
        # The rig's decode names the device the plugin saw the writes go to...
        assert event["target"]["device"] == busiest, (page, offset, written, event["target"])
        # ...and the kernel's own DPA -> HPA is the line that was written.
        pa = int(steps["wl"]["data"]["pages"][page]["pa"], 16)
        assert event["target"]["hpa"] == pa + offset
        assert event["record"]["hpa"] == pa + offset
        assert event["record"]["comp_id"] == f"line-{page}-{offset}"
        targets.append(event["target"]["device"])
    # Every device was hit, each as often as the interleave says.
    counts = Counter(targets)
    assert len(counts) == {"switch-4way": 4, "cross-host-bridge": 2}[topology]
    assert len(set(counts.values())) == 1, counts
    # Every injected field came back: one passing check each, in the results.
    fields = [c for c in run["checks"] if c["op"] == "roundtrip"]
    assert fields and all(c["ok"] for c in fields)
    assert len(fields) >= 8 * len(LINES)

    # Flip one injected field of a real step: its check fails, naming the field,
    # what was injected and what the guest logged.
    step = steps["e1_1024"]
    dpa = step["data"]["injected"]["dpa"]
    data: dict[str, Any] = {**step["data"], "injected": {**step["data"]["injected"],
                                                         "dpa": dpa + 0x1000}}
    failed = [c for c in recheck(Step(id="e1_1024", kind="inject", data=data)) if not c.ok]
    assert [(c.field, c.expected, c.actual) for c in failed] == [("record.dpa", dpa + 0x1000,
                                                                   dpa)]
    assert failed[0].message.startswith(
        f"e1_1024: cxl_general_media.dpa: injected {dpa + 0x1000:#x}, observed "), failed
