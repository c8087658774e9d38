"""A run's plugin data as terminal tables (``cxlrig report RUN_DIR``)."""

from __future__ import annotations

from rich.table import Table

from cxlrig.plugin.results import PluginResults


def plugin_tables(res: PluginResults, top: int = 10) -> list[Table]:
    """A run's plugin data: per phase, accesses per node and device, then the hottest pages."""
    tables = []
    for ph in res.phases:
        table = Table(title=f"phase {ph.name or '(open)'}: {ph.accesses} accesses"
                      + (f", sampled 1/{res.sample}" if res.sampled else ""))
        for col in ("node / device", "reads", "writes", "share", "modelled ms"):
            table.add_column(col, justify="left" if col == "node / device" else "right")
        total = ph.node_accesses or 1
        for node, c in sorted(ph.nodes.items()):
            modelled = f"{c.modelled_ns / 1e6:.2f}" if c.modelled_ns is not None else "-"
            table.add_row(f"node {node}", str(c.reads), str(c.writes),
                          f"{c.total / total:.1%}", modelled)
        for dev, dc in sorted(ph.devices.items()):
            table.add_row(f"  {dev}", str(dc.reads), str(dc.writes),
                          f"{dc.total / total:.1%}", "")
        table.add_row("unmatched", str(ph.unmatched.total), "", "", "")
        tables.append(table)
        if ph.pages:
            pages = Table(title=f"top {top} pages")
            for col in ("pa", "node", "reads", "writes"):
                pages.add_column(col, justify="right")
            for pg in ph.top_pages(top):
                pages.add_row(f"{pg.pa:#x}", str(pg.node), str(pg.reads), str(pg.writes))
            tables.append(pages)
    return tables
