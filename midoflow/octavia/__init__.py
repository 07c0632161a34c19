"""The Octavia v2 API subset ``openstack loadbalancer`` uses (python-octaviaclient,
unmodified), over midoflow's distributed layer-4 load balancing.

Served by the API server beside the native and Neutron APIs, under
:data:`PREFIX` (as devstack serves Octavia at ``http://HOST/load-balancer``);
Keystone's catalog names it as the ``load-balancer`` service. Each request is
one store commit of the Octavia records (kinds ``octavia.<collection>``: what
only Octavia has, such as the VIP port, the project and the timestamps), the
native objects they stand for (:mod:`midoflow.service.lb`, same ids) and the
Neutron VIP port, so a failed request changes nothing.

Mapping: loadbalancer -> a Neutron port on ``vip_subnet_id`` (device owner
``Octavia``) + a native LoadBalancer on the Neutron router with an interface on
that subnet; listener -> Vip on the load balancer's VIP address; pool -> Pool
(Octavia's session persistence, a pool attribute, is copied onto the pool's
listeners, where the native model keeps it); member -> PoolMember;
healthmonitor -> HealthMonitor.
"""

PREFIX = "/load-balancer"
