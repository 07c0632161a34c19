"""DHCP served by the agent of the VM's host (issue 12), pure: the wire
codec (``codec``), the options we send (``options``), the server's decision
(``server``) and the Ethernet/IPv4/UDP frame around a reply (``frames``).
No I/O and no os-ken here: the agent (``midoflow.agent.dhcp``) feeds it."""
