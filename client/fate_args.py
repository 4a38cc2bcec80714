"""FATE Flow arguments as both faces read them: the HTTP family (gateway/families/fate*.py) and
the gRPC SDK (client/flow.py, client/flow_models.py) parse the same fields with these functions,
so a value one face accepts the other accepts too.

Each parser raises `ArgumentError` (a ValueError) naming the field; the SDK answers it with
retcode 101, the gateway with INVALID_ARGUMENT (gateway/errors.py), which FATE's envelope shows
as retcode 101 as well.
"""
from __future__ import annotations

import copy
import json
import re
from typing import Any

ROLES = ("guest", "host", "arbiter", "local")
MAX_ROWS = 10_000


def deep_merge(into: dict, src: dict) -> None:
    """FATE's parameter override: src's values into `into`, objects merged key by key, anything else
    (lists included) replaced by a copy. How a conf's role parameters override its common ones, and
    how the suite runner's --override reaches a component."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


class ArgumentError(ValueError):
    """A FATE argument that cannot be used; the message names the field and what it must be."""


def party_id_of(party_id: Any, name: str = "party_id") -> int:
    """An integer party id (ints or numeric strings; FATE's clients send both); 0 when absent."""
    if party_id is None or party_id == "":
        return 0
    try:
        if isinstance(party_id, bool) or isinstance(party_id, float) and not party_id.is_integer():
            raise ValueError
        return int(party_id)
    except (TypeError, ValueError):
        raise ArgumentError(f"Invalid parameter '{name}': must be an integer, got {json.dumps(party_id)}") from None


def role_of(role: Any, name: str = "role") -> str:
    """One of FATE's roles, or "" when absent."""
    if role is None or role == "":
        return ""
    if role not in ROLES:
        raise ArgumentError(f"Invalid parameter '{name}': {json.dumps(role)}; one of {', '.join(ROLES)}")
    return role


def limit_of(limit: Any, default: int) -> int:
    """A row limit: `default` when absent, 0 meaning as many as allowed, at most MAX_ROWS."""
    if limit is None or limit == "":
        return default
    try:
        if isinstance(limit, bool):
            raise ValueError
        value = int(limit)
    except (TypeError, ValueError):
        raise ArgumentError(f"limit must be an integer, got {limit!r}") from None
    if value < 0:
        raise ArgumentError(f"limit must be at least 0, got {value}")
    return min(value, MAX_ROWS) or MAX_ROWS


def component_names(value: Any, name: str = "cpn_list") -> list[str]:
    """Component names given as a list of strings or as one string: "a,b", "a b" or "[a, b]"
    (FATE's CLI passes the text of a file or of a flag as it is)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [c for c in re.split(r"[,\s]+", value.strip("[] \n")) if c]
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return value
    raise ArgumentError(f"{name} must be a list of component names or a comma-separated string,"
                        f" got {json.dumps(value)}")


def json_object(value: Any, name: str, *, required: bool = False) -> dict | None:
    """A JSON object given as a dict or as its text (FATE's clients send DSLs both ways)."""
    if value is None or value == "":
        if required:
            raise ArgumentError(f"{name} is required (a JSON object)")
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ArgumentError(f"{name} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ArgumentError(f"{name} must be a JSON object")
    return value
