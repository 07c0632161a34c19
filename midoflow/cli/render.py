"""Plain-text output for people: aligned tables and ``key: value`` views."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# A column: header and how to get the cell text from a row.
Column = tuple[str, Callable[[dict], Any]]


def col(header: str, key: str | Callable[[dict], Any]) -> Column:
    if callable(key):
        return (header, key)
    return (header, lambda row: row.get(key))


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(
            f"{k}={{{cell(v)}}}" if isinstance(v, dict) else f"{k}={cell(v)}"
            for k, v in value.items()
        ) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def table(rows: Iterable[dict], columns: Sequence[Column]) -> str:
    """Columns aligned on the widest cell; ids are never cut."""
    head = [h for h, _ in columns]
    body = [[cell(get(r)) for _, get in columns] for r in rows]
    widths = [max(len(x) for x in column) for column in zip(head, *body, strict=True)]
    lines = []
    for line in [head, *body]:
        lines.append("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines)


def details(obj: dict, order: Sequence[str] = ()) -> str:
    """One ``key: value`` line per field, known fields first, in ``order``."""
    keys = [k for k in order if k in obj] + [k for k in obj if k not in order]
    width = max((len(k) for k in keys), default=0)
    lines = []
    for k in keys:
        v = obj[k]
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            lines.append(f"{k + ':':<{width + 1}} {len(v)}")
            for x in v:
                lines.append(" " * (width + 2) + "  ".join(f"{a}={cell(b)}" for a, b in x.items()))
        else:
            lines.append(f"{k + ':':<{width + 1}} {cell(v)}")
    return "\n".join(lines)


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2)


def updown(admin_state_up: Any) -> str:
    if admin_state_up is None:
        return "-"
    return "up" if admin_state_up else "down"
