"""Health checks of load-balancer pool members (pure: no os-ken, kazoo or
cassandra). :mod:`.health`: the per-member state machine and the schedule;
:mod:`.probes`: the TCP and HTTP(S) probes over an injected socket factory."""
