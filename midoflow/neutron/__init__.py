"""The Neutron Networking API v2.0 served by midoflow.

Neutron objects are stored as they are (kinds ``neutron.<collection>``) and
translated into midoflow's own topology (bridges, ports, routers, routes,
chains, rules, security groups) in the same store commit, as MidoNet's
translators did. The translation (:mod:`.translate`) is pure; the service
(:mod:`.service`) reads, validates, translates and commits; the HTTP layer
(:mod:`.api`) speaks Neutron's JSON, errors, filters and pagination.
"""
