"""Imports every Neutron collection module, so that each registers its handler."""

from midoflow.neutron import (  # noqa: F401
    floatingips,
    networks,
    ports,
    routers,
    security_groups,
    subnets,
)
