"""The topology: YAML machine descriptions, validated and resolved."""

from cxlrig.topology.model import Topology
from cxlrig.topology.validate import TopologyError, load, loads
from cxlrig.topology.yamlmarks import Problem

__all__ = ["Problem", "Topology", "TopologyError", "load", "loads"]
