"""Port groups and IP address groups: what rules match on by membership.

A member joins in a commit that touches it (a concurrent delete of the port
fails); a group is not deleted while a rule matches on it. IP address groups
generated for security groups (version-5 ids) are refused for direct change.
"""

from __future__ import annotations

from typing import Any

from midoflow import model
from midoflow.errors import Conflict, Invalid, NotFound
from midoflow.service import body as gen
from midoflow.service import refs
from midoflow.service import security as sec
from midoflow.service import validate as v
from midoflow.service.chains import echo_generated
from midoflow.service.context import Ctx, generated, ref, sort_key
from midoflow.service.ports import port_out
from midoflow.service.txn import Txn
from midoflow.store.base import Data


def _rules_using(txn: Txn, fields: tuple[str, ...], oid: str) -> list[str]:
    return sorted(r["id"] for r in txn.list(model.RULES)
                  if any(r.get(f) == oid for f in fields))


@refs.special(model.PORT_GROUPS)
def _deleting_port_group(txn: Txn, group: Data) -> None:
    users = _rules_using(txn, ("port_group",), group["id"])
    if users:
        raise Conflict(f"port group {group['id']} is used by rules {', '.join(users)}: "
                       "change them first")


@refs.special(model.IP_ADDR_GROUPS)
def _deleting_ip_addr_group(txn: Txn, group: Data) -> None:
    users = _rules_using(txn, ("ip_addr_group_src", "ip_addr_group_dst"), group["id"])
    if users:
        raise Conflict(f"IP address group {group['id']} is used by rules "
                       f"{', '.join(users)}: change them first")


class Groups:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.store = ctx.store

    # ---------------------------------------------------------- port groups
    def _pg_out(self, data: Data, version: int) -> Data:
        out = self.ctx.out(model.PORT_GROUPS, data, version)
        out["stateful"] = bool(data.get("stateful", False))
        return out

    def list_port_groups(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self._pg_out(d, ver)
                       for d, ver in self.ctx.listed(model.PORT_GROUPS, tenant_id)),
                      key=sort_key)

    def get_port_group(self, id: str) -> Data:
        return self._pg_out(*self.ctx.get(model.PORT_GROUPS, id))

    def create_port_group(self, body: Any) -> Data:
        body, data = gen.create(model.PORT_GROUPS, body)
        data["id"] = self.ctx.new_id(model.PORT_GROUPS, body)
        txn = Txn(self.store)
        txn.create(model.PORT_GROUPS, data)
        txn.commit()
        return self.get_port_group(data["id"])

    def update_port_group(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self.ctx.get(model.PORT_GROUPS, id)
        new = gen.update(model.PORT_GROUPS, body, data)
        self.ctx.check_version(body, ver, f"port group {data['id']}")
        txn = Txn(self.store)
        txn.seen(model.PORT_GROUPS, data, ver)
        txn.put(model.PORT_GROUPS, new)
        txn.commit()
        return self.get_port_group(data["id"])

    def delete_port_group(self, id: str) -> None:
        self.ctx.delete(model.PORT_GROUPS, *self.ctx.get(model.PORT_GROUPS, id))

    def list_port_group_ports(self, id: str) -> list[Data]:
        group, _ = self.ctx.get(model.PORT_GROUPS, id)
        out = []
        for pid in group.get("port_ids", ()):
            try:
                out.append(port_out(self.ctx, *self.store.get(model.PORTS, pid)))
            except NotFound:
                continue
        return out

    def add_port_group_port(self, id: str, body: Any) -> Data:
        """Add {port_id}; answers the group. 409 if the port is already a member."""
        group, gver = self.ctx.get(model.PORT_GROUPS, id)
        body = v.body_object(body)
        v.check_fields(body, ("port_id",))
        pid = v.uuid_str(v.require(body, "port_id"), "port_id")
        txn = Txn(self.store)
        txn.seen(model.PORT_GROUPS, group, gver)
        ref(txn, model.PORTS, pid, "port_id")
        if pid in group.get("port_ids", ()):
            raise Conflict(f"port {pid} is already in port group {group['id']}", "port_id")
        group["port_ids"] = list(group.get("port_ids", ())) + [pid]
        txn.put(model.PORT_GROUPS, group)
        txn.touch(model.PORTS, pid)  # a concurrent delete of the port fails
        txn.commit()
        return self.get_port_group(group["id"])

    def remove_port_group_port(self, id: str, port_id: str) -> Data:
        group, gver = self.ctx.get(model.PORT_GROUPS, id)
        pid = v.url_id(port_id, "member port")
        if pid not in group.get("port_ids", ()):
            raise NotFound(f"port {pid} is not in port group {group['id']}")
        txn = Txn(self.store)
        txn.seen(model.PORT_GROUPS, group, gver)
        group["port_ids"] = [p for p in group["port_ids"] if p != pid]
        txn.put(model.PORT_GROUPS, group)
        txn.commit()
        return self.get_port_group(group["id"])

    # ------------------------------------------------------- IP addr groups
    def _ipag_out(self, data: Data, version: int) -> Data:
        out = self.ctx.out(model.IP_ADDR_GROUPS, data, version)
        out["generated"] = sec.is_generated(data["id"])
        return out

    def list_ip_addr_groups(self, tenant_id: str | None = None) -> list[Data]:
        return sorted((self._ipag_out(d, ver)
                       for d, ver in self.ctx.listed(model.IP_ADDR_GROUPS, tenant_id)),
                      key=sort_key)

    def get_ip_addr_group(self, id: str) -> Data:
        return self._ipag_out(*self.ctx.get(model.IP_ADDR_GROUPS, id))

    def create_ip_addr_group(self, body: Any) -> Data:
        body, data = gen.create(model.IP_ADDR_GROUPS, body)
        data["id"] = self.ctx.user_id(model.IP_ADDR_GROUPS, body)
        txn = Txn(self.store)
        txn.create(model.IP_ADDR_GROUPS, data)
        txn.commit()
        return self.get_ip_addr_group(data["id"])

    def _user_ipag(self, id: str) -> tuple[Data, int]:
        data, ver = self.ctx.get(model.IP_ADDR_GROUPS, id)
        if sec.is_generated(data["id"]):
            raise generated(model.IP_ADDR_GROUPS, data["id"])
        return data, ver

    def update_ip_addr_group(self, id: str, body: Any) -> Data:
        body = v.body_object(body)
        data, ver = self._user_ipag(id)
        new = gen.update(model.IP_ADDR_GROUPS, body, data)
        echo_generated(body, data["id"])
        self.ctx.check_version(body, ver, f"IP address group {data['id']}")
        txn = Txn(self.store)
        txn.seen(model.IP_ADDR_GROUPS, data, ver)
        txn.put(model.IP_ADDR_GROUPS, new)
        txn.commit()
        return self.get_ip_addr_group(data["id"])

    def delete_ip_addr_group(self, id: str) -> None:
        self.ctx.delete(model.IP_ADDR_GROUPS, *self._user_ipag(id))

    def list_ip_addr_group_addresses(self, id: str) -> list[str]:
        return self.get_ip_addr_group(id)["addresses"]

    def add_ip_addr_group_address(self, id: str, body: Any) -> Data:
        """Add {address}; answers the group. 409 if it is already in it."""
        data, ver = self._user_ipag(id)
        body = v.body_object(body)
        v.check_fields(body, ("address",))
        addr = v.unicast_ipv4(v.require(body, "address"), "address")
        if addr in data.get("addresses", ()):
            raise Conflict(f"{addr} is already in IP address group {data['id']}", "address")
        txn = Txn(self.store)
        txn.seen(model.IP_ADDR_GROUPS, data, ver)
        data["addresses"] = list(data.get("addresses", ())) + [addr]
        txn.put(model.IP_ADDR_GROUPS, data)
        txn.commit()
        return self.get_ip_addr_group(data["id"])

    def remove_ip_addr_group_address(self, id: str, address: str) -> Data:
        data, ver = self._user_ipag(id)
        try:
            addr = v.unicast_ipv4(address, "address")
        except Invalid:
            addr = None
        if addr is None or addr not in data.get("addresses", ()):
            raise NotFound(f"{address[:64]} is not in IP address group {data['id']}")
        txn = Txn(self.store)
        txn.seen(model.IP_ADDR_GROUPS, data, ver)
        data["addresses"] = [a for a in data["addresses"] if a != addr]
        txn.put(model.IP_ADDR_GROUPS, data)
        txn.commit()
        return self.get_ip_addr_group(data["id"])
