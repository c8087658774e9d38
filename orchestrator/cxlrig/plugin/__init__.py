"""The cxlrig-mem TCG plugin: building it, its arguments, its control socket, its output.

This package is the only part of cxlrig that knows the plugin's formats;
``qemu-plugin/README.md`` describes them.
"""

from cxlrig.plugin.addrmap import (
    AddressMap,
    Latency,
    PluginConfigError,
    RegionDecode,
    address_map,
    dram_map,
    map_args,
    plugin_args,
    region_map,
)
from cxlrig.plugin.build import PluginBuildError, build_plugin
from cxlrig.plugin.control import Control, ControlError
from cxlrig.plugin.results import PluginResults, ResultsError
from cxlrig.plugin.results import load as load_results
from cxlrig.qemu.mtree import MemoryLayout, NodeRange, parse_mtree

__all__ = [
    "AddressMap",
    "Control",
    "ControlError",
    "Latency",
    "MemoryLayout",
    "NodeRange",
    "PluginBuildError",
    "PluginConfigError",
    "PluginResults",
    "RegionDecode",
    "ResultsError",
    "address_map",
    "build_plugin",
    "dram_map",
    "load_results",
    "map_args",
    "parse_mtree",
    "plugin_args",
    "region_map",
]
