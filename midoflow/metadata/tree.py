"""The built-in metadata answers (pure), for a cloud without Nova: what
midoflow knows of the VM's port, laid out as Nova lays out its OpenStack
(``openstack/<version>/meta_data.json``, ``network_data.json``) and EC2
(``<version>/meta-data/...``) trees, directory documents listing their
entries one a line (a sub-directory with a trailing ``/``), so cloud-init's
OpenStack and EC2 data sources both find what they look for. There is no
user data (404, as Nova answers for an instance without any) and no keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# Nova's versions (cloud-init asks for a dated one before "latest").
OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
                      "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "latest")
EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
                "2008-02-01", "2008-09-01", "2009-04-04", "latest")
AVAILABILITY_ZONE = "nova"
JSON = "application/json"
TEXT = "text/plain; charset=UTF-8"


@dataclass(frozen=True)
class Instance:
    """What the metadata service knows of the VM behind one port."""

    port_id: str
    instance_id: str  # the port's instance_id (Neutron device_id); else the port id
    tenant_id: str
    hostname: str
    local_ipv4: str
    mac: str = ""
    network_id: str = ""
    public_ipv4: str | None = None
    mtu: int | None = None
    name: str = ""


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


def _text(lines) -> Answer:
    return Answer(200, TEXT, "\n".join(lines).encode())


def _json(doc) -> Answer:
    return Answer(200, JSON, json.dumps(doc, sort_keys=True).encode())


def not_found(path: str) -> Answer:
    return Answer(404, TEXT, f"no metadata at /{path}: see / for what there is\n".encode())


def meta_data(inst: Instance) -> dict:
    return {"uuid": inst.instance_id, "name": inst.name or inst.hostname,
            "hostname": inst.hostname, "project_id": inst.tenant_id, "launch_index": 0,
            "availability_zone": AVAILABILITY_ZONE, "public_keys": {}, "meta": {},
            "devices": []}


def network_data(inst: Instance) -> dict:
    link = {"id": f"tap{inst.port_id[:11]}", "type": "ovs", "vif_id": inst.port_id,
            "ethernet_mac_address": inst.mac}
    if inst.mtu:
        link["mtu"] = inst.mtu
    return {"links": [link],
            "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": link["id"],
                          "network_id": inst.network_id}],
            "services": []}


def _ec2_meta(inst: Instance) -> dict[str, str]:
    out = {"ami-launch-index": "0", "hostname": inst.hostname, "instance-id": inst.instance_id,
           "local-hostname": inst.hostname, "local-ipv4": inst.local_ipv4,
           "placement/": "availability-zone"}
    if inst.public_ipv4:
        out["public-ipv4"] = inst.public_ipv4
    return out


def answer(inst: Instance, path: str) -> Answer:
    """The document at ``path`` (the request's path, with or without its
    leading and trailing slashes)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return _text([*EC2_VERSIONS, "openstack"])
    if parts[0] == "openstack":
        return _openstack(inst, parts[1:], path)
    if parts[0] in EC2_VERSIONS:
        return _ec2(inst, parts[1:], path)
    return not_found(path.strip("/"))


def _openstack(inst: Instance, parts: list[str], path: str) -> Answer:
    if not parts:
        return _text(OPENSTACK_VERSIONS)
    if parts[0] not in OPENSTACK_VERSIONS or len(parts) > 2:
        return not_found(path.strip("/"))
    if len(parts) == 1:
        return _text(["meta_data.json", "network_data.json", "vendor_data.json",
                      "vendor_data2.json"])
    docs = {"meta_data.json": lambda: meta_data(inst),
            "network_data.json": lambda: network_data(inst),
            "vendor_data.json": dict, "vendor_data2.json": dict}
    doc = docs.get(parts[1])
    return _json(doc()) if doc else not_found(path.strip("/"))


def _ec2(inst: Instance, parts: list[str], path: str) -> Answer:
    if not parts:
        return _text(["meta-data/"])
    if parts[0] != "meta-data":
        return not_found(path.strip("/"))  # user-data among them: there is none
    meta = _ec2_meta(inst)
    rest = parts[1:]
    if not rest:
        return _text(sorted(meta))
    if rest == ["placement"]:
        return _text(["availability-zone"])
    if rest == ["placement", "availability-zone"]:
        return _text([AVAILABILITY_ZONE])
    if len(rest) == 1 and rest[0] in meta and not rest[0].endswith("/"):
        return _text([meta[rest[0]]])
    return not_found(path.strip("/"))
