"""Fuzz the REST API from its own OpenAPI document (schemathesis 4.x).

The WSGI app runs in process on the memory store, reset before every case to a
small seeded topology. Generated UUIDs in paths and bodies are often swapped for
the seeded objects' ids, so the fuzzer reaches the real code paths (binding,
linking, membership, deletes with references) and not only 404s.

Checks: no 5xx, status codes / content types / bodies conform to the document,
schema-violating input is rejected, and a request answered 4xx changed nothing.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from midoflow import model
from midoflow.rest.app import make_app
from midoflow.store import paths
from midoflow.store.memory import MemoryBackend, MemoryStore

pytestmark = pytest.mark.fuzz

HOST1 = "11111111-1111-4111-8111-111111111111"
HOST2 = "22222222-2222-4222-8222-222222222222"
TZ1 = "33333333-3333-4333-8333-333333333333"
BR1 = "44444444-4444-4444-8444-444444444444"
BR2 = "55555555-5555-4555-8555-555555555555"
BR3 = "66666666-6666-4666-8666-666666666666"
P_BOUND = "77777777-7777-4777-8777-777777777777"
P_FREE = "88888888-8888-4888-8888-888888888888"
P_INT1 = "99999999-9999-4999-8999-999999999999"
P_INT2 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
P_INT3 = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
KNOWN = [HOST1, HOST2, TZ1, BR1, BR2, BR3, P_BOUND, P_FREE, P_INT1, P_INT2, P_INT3]


def _port(pid, bridge, key, type_=model.PORT_EXTERIOR, host=None, iface=None, peer=None):
    return {"id": pid, "device_id": bridge, "device_type": "bridge", "type": type_,
            "admin_state_up": True, "host_id": host, "interface_name": iface,
            "peer_id": peer, "name": f"port{key}", "tunnel_key": key}


def seeded_backend() -> MemoryBackend:
    b = MemoryBackend()
    objs = {
        model.HOSTS: [{"id": HOST1, "name": "host1", "description": ""},
                      {"id": HOST2, "name": "host2", "description": "spare"}],
        model.TUNNEL_ZONES: [{"id": TZ1, "name": "tz", "type": "vxlan",
                              "members": [{"host_id": HOST1, "ip": "10.0.0.1"}]}],
        model.BRIDGES: [
            {"id": BR1, "name": "br1", "tenant_id": "t1", "admin_state_up": True,
             "port_ids": [P_BOUND, P_FREE, P_INT1]},
            {"id": BR2, "name": "br2", "tenant_id": "t2", "admin_state_up": True,
             "port_ids": [P_INT2, P_INT3]},
            {"id": BR3, "name": "br3", "tenant_id": "t1", "admin_state_up": False,
             "port_ids": []},
        ],
        model.PORTS: [
            _port(P_BOUND, BR1, 1, host=HOST1, iface="tap0"),
            _port(P_FREE, BR1, 2),
            _port(P_INT1, BR1, 3, model.PORT_INTERIOR),
            _port(P_INT2, BR2, 4, model.PORT_INTERIOR),
            _port(P_INT3, BR2, 5, model.PORT_INTERIOR, peer=None),
        ],
    }
    for kind, items in objs.items():
        for o in items:
            b.models[kind][o["id"]] = (o, 0)
    b.counters["tunnel_key"] = 5
    b.state[paths.host_alive(HOST1)] = (
        {"host_id": HOST1, "hostname": "host1", "tunnel_ips": {"vxlan": "10.0.0.1"},
         "ovs_connected": True, "started_at": 1.0}, None)
    return b


def snapshot(b: MemoryBackend) -> Any:
    return copy.deepcopy(({k: dict(v) for k, v in b.models.items() if v}, dict(b.state)))


STORE = MemoryStore(seeded_backend())
APP = make_app(STORE)
schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", APP)


HOSTS = [HOST1, HOST2]
PORTS = [P_BOUND, P_FREE, P_INT1, P_INT2, P_INT3]
POOLS = {"hosts": HOSTS, "tunnel_zones": [TZ1], "bridges": [BR1, BR2, BR3], "ports": PORTS}


def _pick(value: Any, salt: str, pool: list[str]) -> Any:
    """Deterministically replace a generated UUID by a seeded id most of the time."""
    if not isinstance(value, str) or len(value) != 36:
        return value
    h = int(hashlib.sha256((salt + value).encode()).hexdigest(), 16)
    i = h % (len(pool) + 1)
    return pool[i] if i < len(pool) else value


@schema.hook
def map_case(ctx, case):
    if case.path_parameters:
        kind = case.path.split("/")[2]
        case.path_parameters = {
            k: _pick(val, k, HOSTS if k == "host_id" else POOLS.get(kind, KNOWN))
            for k, val in case.path_parameters.items()
        }
    if isinstance(case.body, dict):
        body = dict(case.body)
        for k, pool in (("host_id", HOSTS), ("peer_id", PORTS)):
            if k in body:
                body[k] = _pick(body[k], k, pool)
        case.body = body
    return case


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.negative_data_rejection,
]


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck),
          database=None)
def test_api_from_openapi(case):
    STORE.backend = seeded_backend()
    before = snapshot(STORE.backend)
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500, response.text
    if 400 <= response.status_code < 500:
        assert snapshot(STORE.backend) == before, (
            f"{case.method} {case.formatted_path} answered {response.status_code} "
            "but changed the store"
        )
