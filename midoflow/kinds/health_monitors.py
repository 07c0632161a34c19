"""Health monitors: one per pool, run by one elected agent (issue 14)."""

from midoflow import model
from midoflow.kinds.base import (
    CASCADE,
    ENUM,
    INTEGER,
    STRING,
    UUID,
    Column,
    Field,
    Kind,
    common_id,
    name_field,
    tenant_field,
)
from midoflow.kinds.load_balancers import admin_state

RETRIES_MAX = 10
DELAY_MAX = 86400

KIND = Kind(
    name=model.HEALTH_MONITORS, label="health monitor", schema="HealthMonitor",
    description="Health monitors of pools (one per pool)",
    fields=(
        common_id(),
        Field("pool_id", UUID, required=True, update=False, ref=model.POOLS,
              on_delete=CASCADE,
              frozen="of a health monitor cannot be changed: delete it and create another",
              description="The pool whose members it checks (one monitor per pool: 409)"),
        Field("type", ENUM, default=model.HM_TCP, choices=model.HM_TYPES, update=False,
              frozen="of a health monitor cannot be changed: delete it and create another",
              description="TCP: a connection; HTTP/HTTPS: a request whose status is in "
                          "expected_codes (no certificate check)"),
        Field("delay", INTEGER, default=5, lo=1, hi=DELAY_MAX,
              description="Seconds between checks of a member; at least timeout"),
        Field("timeout", INTEGER, default=3, lo=1, hi=DELAY_MAX,
              description="Seconds a check may take"),
        Field("max_retries", INTEGER, default=3, lo=1, hi=RETRIES_MAX,
              description="Successes in a row that make a member ONLINE"),
        Field("max_retries_down", INTEGER, default=3, lo=1, hi=RETRIES_MAX,
              description="Failures in a row that make a member ERROR"),
        Field("http_method", ENUM, default="GET", choices=model.HM_METHODS,
              description="HTTP/HTTPS only"),
        Field("url_path", STRING, default="/", max_len=2048,
              description="HTTP/HTTPS only: a path starting with '/'"),
        Field("expected_codes", STRING, default="200", max_len=64,
              description='HTTP/HTTPS only: "200", a list "200,202" or a range "200-204"'),
        name_field(),
        tenant_field(),
        admin_state(),
    ),
    tenant="tenant_id",
    cli="health-monitor",
    columns=(Column("ID", "id"), Column("NAME", "name"), Column("POOL", "pool_id"),
             Column("TYPE", "type"), Column("DELAY", "delay"), Column("TIMEOUT", "timeout"),
             Column("STATE", "admin_state_up", "updown")),
    show=("id", "name", "tenant_id", "pool_id", "type", "delay", "timeout", "max_retries",
          "max_retries_down", "http_method", "url_path", "expected_codes", "admin_state_up",
          "version"),
    create_note="400 naming the field for a bad value (delay < timeout, HTTP fields on a "
                "TCP monitor, ...); 409 if the pool already has a monitor.",
    update_note="Partial update of every field but pool_id and type, checked as on "
                "creation.",
    delete_note="Deleted with its pool; its members' health entries go with it.",
)
