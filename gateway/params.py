"""Reading query parameters; every bad value raises BadRequest with the parameter's name."""
from __future__ import annotations

from multidict import MultiMapping

from .errors import BadRequest

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off", ""}


def one(query: MultiMapping[str], name: str, default: str | None = None, *, required: bool = False) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"query parameter {name!r} is given {len(values)} times; give it once")
    if not values:
        if required:
            raise BadRequest(f"query parameter {name!r} is required")
        return default
    return values[0]


def integer(query: MultiMapping[str], name: str, default: int | None = None, *, required: bool = False,
            low: int | None = None, high: int | None = None) -> int | None:
    text = one(query, name, required=required)
    if text is None or (text == "" and not required):
        return default
    return to_int(text, name, low, high)


INT64 = (-(1 << 63), (1 << 63) - 1)


def to_int(text: str, name: str, low: int | None = None, high: int | None = None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {text!r}") from None
    if not INT64[0] <= value <= INT64[1]:
        raise BadRequest(f"{name} is out of range: {text!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be {bounds}, got {value}")
    return value


def boolean(query: MultiMapping[str], name: str, default: bool = False) -> bool:
    text = one(query, name)
    return default if text is None else to_bool(text, name)


def to_bool(text: str, name: str) -> bool:
    low = text.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise BadRequest(f"{name} must be true or false, got {text!r}")
