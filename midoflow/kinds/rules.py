"""Rules of a chain. Unset conditions match anything; ``invert`` names the conditions
whose sense is inverted. Whole-rule checks (jump needs a target, NAT needs targets,
loops ...) are code in the chains family."""

from midoflow import model
from midoflow.kinds.base import (
    BOOLEAN,
    CASCADE,
    CIDR,
    ENUM,
    INTEGER,
    MAC,
    OBJECT,
    REFUSE,
    UUID,
    UUID_LIST,
    Column,
    Field,
    Kind,
    common_id,
)

RANGE = {"$ref": "#/components/schemas/PortRange"}
CONDITION = {"$ref": "#/components/schemas/RuleCondition"}


def _cond(name: str, type: str, **kw) -> Field:
    return Field(name, type, nullable=True, default=None, **kw)


KIND = Kind(
    name=model.RULES, label="rule", schema="Rule",
    fields=(
        common_id(),
        Field("chain_id", UUID, update=False, special=True, ref=model.CHAINS,
              on_delete=CASCADE, description="May be echoed; the chain is the one in the URL"),
        Field("action", ENUM, required=True, choices=model.RULE_ACTIONS),
        _cond("jump_chain_id", UUID, ref=model.CHAINS, on_delete=REFUSE),
        Field("in_ports", UUID_LIST, default=[], ref=model.PORTS, on_delete=REFUSE),
        Field("out_ports", UUID_LIST, default=[], ref=model.PORTS, on_delete=REFUSE),
        _cond("port_group", UUID, ref=model.PORT_GROUPS, on_delete=REFUSE),
        _cond("ip_addr_group_src", UUID, ref=model.IP_ADDR_GROUPS, on_delete=REFUSE),
        _cond("ip_addr_group_dst", UUID, ref=model.IP_ADDR_GROUPS, on_delete=REFUSE),
        _cond("eth_type", INTEGER, lo=0, hi=0xFFFF),
        _cond("eth_src", MAC, special=True),  # any MAC, group bit allowed
        _cond("eth_dst", MAC, special=True),
        _cond("nw_src", CIDR),
        _cond("nw_dst", CIDR),
        _cond("nw_proto", INTEGER, lo=0, hi=255),
        _cond("nw_tos", INTEGER, lo=0, hi=255),
        _cond("tp_src", OBJECT, special=True, schema=RANGE),
        _cond("tp_dst", OBJECT, special=True, schema=RANGE),
        Field("match_forward_flow", BOOLEAN, default=False),
        Field("match_return_flow", BOOLEAN, default=False),
        Field("fragment_policy", ENUM, default=model.FRAG_ANY, choices=model.FRAG_POLICIES),
        Field("invert", OBJECT, default=[], special=True,
              schema={"type": "array", "items": CONDITION}),
        Field("nat_targets", OBJECT, default=[], special=True,
              schema={"type": "array", "items": {"$ref": "#/components/schemas/NatTarget"}},
              input_schema={"type": "array",
                            "items": {"$ref": "#/components/schemas/NatTargetIn"}}),
        Field("generated", BOOLEAN, computed=True, special=True,
              description="A rule of a generated chain (read-only)"),
    ),
    parents=((model.CHAINS, "chain_id"),),
    top_create=False,
    extra_create=(Field("position", INTEGER, lo=1, special=True,
                        description="1-based place in the chain (default last; at most the "
                                    "number of rules + 1)"),),
    extra_update=(Field("position", INTEGER, lo=1, special=True),),
    columns=(Column("#", "position"), Column("ID", "id"), Column("ACTION", "action",
                                                                 "rule_action"),
             Column("MATCH", "id", "rule_match")),
    show=("id", "chain_id", "action", "jump_chain_id", "nat_targets", "in_ports", "out_ports",
          "port_group", "ip_addr_group_src", "ip_addr_group_dst", "eth_type", "eth_src",
          "eth_dst", "nw_src", "nw_dst", "nw_proto", "nw_tos", "tp_src", "tp_dst",
          "match_forward_flow", "match_return_flow", "fragment_policy", "invert", "generated",
          "version"),
    create_note="Unset conditions match anything. invert lists the conditions whose sense is "
                "inverted (each must be set). match_forward_flow / match_return_flow match the "
                "first / the reply direction of a tracked connection (not both).",
    update_note="Partial update (null unsets a condition); id, chain_id and generated may be "
                "echoed unchanged; position moves the rule in its chain.",
)
