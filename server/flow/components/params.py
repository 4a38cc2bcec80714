"""Checking FATE-style parameters: one place for the clear, uniform ComponentError messages.

FATE's parameter classes accept nested dicts (`encrypt_param`, `init_param`, ...) that are merged
over their own defaults; `merge_nested` does the same and refuses keys the nested object doesn't have.
"""
from __future__ import annotations

from typing import Any, Iterable

from server.flow.components.base import ComponentError


def choice(module: str, name: str, value: Any, allowed: Iterable[Any], *, lower: bool = True) -> Any:
    """`value` lowercased (FATE compares case-insensitively) if it is one of `allowed`."""
    allowed = list(allowed)
    v = value.lower() if lower and isinstance(value, str) else value
    if v not in allowed:
        shown = ", ".join("null" if a is None else str(a) for a in allowed)
        raise ComponentError(f"{module}: {name}={value!r} is not supported; use one of {shown}")
    return v


def boolean(module: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ComponentError(f"{module}: {name} must be true or false, not {value!r}")
    return value


def number(module: str, name: str, value: Any, *, minimum: float | None = None, integer: bool = False,
           exclusive: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ComponentError(f"{module}: {name} must be {kind}, not {value!r}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise ComponentError(f"{module}: {name} must be {'>' if exclusive else '>='} {minimum}, not {value!r}")
    return value


def merge_nested(module: str, name: str, value: Any, defaults: dict) -> dict:
    """A nested parameter object (e.g. `encrypt_param`) merged over its defaults; unknown keys refused."""
    if value is None:
        return dict(defaults)
    if not isinstance(value, dict):
        raise ComponentError(f"{module}: {name} must be an object, not {value!r}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise ComponentError(f"{module}: unknown key(s) {', '.join(unknown)} in {name}; "
                             f"known: {', '.join(sorted(defaults))}")
    return {**defaults, **value}
