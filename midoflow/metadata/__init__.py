"""Instance metadata (http://169.254.169.254/) served by the agent of the
VM's host, as MidoNet and Neutron's metadata proxy do.

* :mod:`.addresses`: the per-port link-local addresses a VM's requests are
  rewritten to come from, so the proxy knows the port (pure);
* :mod:`.signature`: ``X-Instance-ID-Signature`` (pure);
* :mod:`.tree`: the built-in OpenStack and EC2 answers when no Nova is
  configured (pure);
* :mod:`.proxy`: the WSGI application (forwarding to Nova, or the tree);
* :mod:`.service`: the agent's plumbing (the OVS internal port with
  169.254.169.254 in the host's OVS namespace, the listening socket made
  there, the eventlet WSGI server).
"""
