"""The topology service layer: validation and referential integrity over a Store."""

from midoflow.service.topology import TopologyService

__all__ = ["TopologyService"]
