"""Every flow-mod checked against the declared pipeline (``midoflow.apps.tables``)
before it is sent: the table exists, its match uses the table's fields with
their OpenFlow prerequisites, its actions, set-fields, gotos and meters are
the table's, and its priority, cookie and timeouts are those of one of the
table's writers. ``check`` raises ``PipelineError`` naming what is wrong."""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from midoflow.apps.tables import ALL_BITS, PIPELINE, PREREQUISITES, Table, Writer

_ADDS = (ofp.OFPFC_ADD, ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT)
_DELETES = (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT)


class PipelineError(ValueError):
    """A flow-mod the declared pipeline does not allow: a bug in the code that
    built it (fix the builder, or declare the new flow in midoflow.apps.tables)."""


def check(msg) -> str | None:
    """Check one message; returns the writer a flow-mod belongs to ("base",
    "classify", ...; None for a delete or a message that is no flow-mod)."""
    if not isinstance(msg, parser.OFPFlowMod):
        return None
    if msg.command in _DELETES:
        _check_delete(msg)
        return None
    if msg.command not in _ADDS:
        raise PipelineError(f"flow-mod command {msg.command} is not one the agent sends")
    table = _table(msg.table_id)
    where = f"table {table.table_id} ({table.name}), priority {msg.priority}"
    writer = table.writer(msg.priority, msg.cookie)
    if writer is None:
        raise PipelineError(f"{where}, cookie {msg.cookie:#x}: no writer of this table uses "
                            f"that priority and cookie (writers: "
                            f"{', '.join(w.name for w in table.writers)})")
    where += f", writer {writer.name}"
    idle, hard = msg.idle_timeout, msg.hard_timeout
    want = writer.timeout
    if (want == "idle") != bool(idle) or (want == "hard") != bool(hard):
        raise PipelineError(f"{where}: idle_timeout {idle}, hard_timeout {hard}; this writer's "
                            f"flows take {want + ' timeout' if want else 'no timeout'}")
    match = dict(msg.match.items())
    _check_match(table, match, where)
    _check_instructions(table, msg.instructions, match, where, writer)
    return writer.name


def _table(table_id: int) -> Table:
    table = PIPELINE.get(table_id)
    if table is None:
        raise PipelineError(f"table {table_id} is not declared in midoflow.apps.tables "
                            f"(tables: {sorted(PIPELINE)})")
    return table


def _value(v):
    return v[0] if isinstance(v, tuple) else v


def _check_match(table: Table, match: dict, where: str) -> None:
    extra = sorted(set(match) - table.match)
    if extra:
        raise PipelineError(f"{where}: match field(s) {', '.join(extra)} not declared for "
                            f"this table")
    for f in match:
        _prerequisites(f, match, where, f"match field {f}")


def _prerequisites(key: str, match: dict, where: str, what: str) -> None:
    for field, allowed in PREREQUISITES.get(key, {}).items():
        if field not in match or _value(match[field]) not in allowed:
            raise PipelineError(f"{where}: {what} needs {field} in "
                                f"{[hex(a) if a > 255 else a for a in allowed]} in the match")


def _check_instructions(table: Table, instructions: list, match: dict, where: str,
                        writer: Writer | None = None) -> None:
    # A writer that copies to the controller where its table may not: only
    # through the meter of its match's in_port, the copy made first.
    copies = writer is not None and writer.copy_to_controller and not table.controller
    port_meter = copies and any(isinstance(i, parser.OFPInstructionMeter)
                                and i.meter_id == _value(match.get("in_port"))
                                for i in instructions)
    for inst in instructions:
        if isinstance(inst, parser.OFPInstructionGotoTable):
            if inst.table_id not in table.goto:
                raise PipelineError(f"{where}: goto_table {inst.table_id} not allowed "
                                    f"(allowed: {sorted(table.goto) or 'none'})")
        elif isinstance(inst, parser.OFPInstructionMeter):
            if copies:
                if inst.meter_id != _value(match.get("in_port")):
                    raise PipelineError(f"{where}: meter {inst.meter_id}: this writer's flows "
                                        f"take their in_port's meter only")
            elif not table.meter:
                raise PipelineError(f"{where}: meter {inst.meter_id}: this table takes no meter")
        elif isinstance(inst, parser.OFPInstructionActions) and \
                inst.type == ofp.OFPIT_APPLY_ACTIONS:
            for n, a in enumerate(inst.actions):
                if copies and isinstance(a, parser.OFPActionOutput) and \
                        a.port == ofp.OFPP_CONTROLLER:
                    if n or not port_meter:
                        raise PipelineError(f"{where}: a copy to the controller must be the "
                                            f"first action, through the in_port's meter")
                    continue
                _check_action(table, a, match, where)
        else:
            raise PipelineError(f"{where}: instruction {type(inst).__name__} "
                                f"(type {getattr(inst, 'type', '?')}) is not used by this "
                                f"pipeline (apply-actions, goto_table and meter only)")


def _check_action(table: Table, a, match: dict, where: str) -> None:
    if isinstance(a, parser.OFPActionOutput):
        kind = "output"
        if a.port == ofp.OFPP_CONTROLLER and not table.controller:
            raise PipelineError(f"{where}: output to the controller is not allowed here "
                                f"(a packet-in must pass its port's meter in table 2)")
    elif isinstance(a, parser.OFPActionSetField):
        kind = "set_field"
        if a.key not in table.set_fields:
            raise PipelineError(f"{where}: set_field {a.key} not allowed in this table "
                                f"(allowed: {', '.join(sorted(table.set_fields)) or 'none'})")
        _prerequisites(a.key, match, where, f"set_field {a.key}")
    elif isinstance(a, parser.OFPActionDecNwTtl):
        kind = "dec_nw_ttl"
        _prerequisites(kind, match, where, kind)
    elif isinstance(a, parser.NXActionCT):
        kind = "NXActionCT"
        if table.table_id not in (4, 5):  # there, ct_state says the packet is IP
            _prerequisites(kind, match, where, "ct()")
    else:
        kind = type(a).__name__
    if kind not in table.actions:
        raise PipelineError(f"{where}: action {kind} not allowed in this table "
                            f"(allowed: {', '.join(sorted(table.actions))})")


def _check_delete(msg) -> None:
    match = dict(msg.match.items())
    if msg.table_id == ofp.OFPTT_ALL:
        if match or msg.cookie_mask:
            raise PipelineError("a delete in every table (OFPTT_ALL) is the base wipe only: "
                                "an empty match and no cookie")
        return
    table = _table(msg.table_id)
    where = f"table {table.table_id} ({table.name}), delete"
    if msg.cookie_mask:
        if msg.cookie_mask != ALL_BITS and not any(
                w.mask == msg.cookie_mask for w in table.writers):
            raise PipelineError(f"{where}: cookie mask {msg.cookie_mask:#x} is no writer's")
        if not any(w.cookie and msg.cookie & w.mask == w.cookie for w in table.writers):
            raise PipelineError(f"{where}: cookie {msg.cookie:#x} is no writer's of this table")
    _check_match(table, match, where)
