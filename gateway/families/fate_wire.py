"""FATE Flow's wire conventions for the fate family: envelope, error codes, reading bodies.

Envelope: {"retcode", "retmsg", "data"?, "jobId"?, "meta"?} (keys whose value is None left out),
HTTP 200 even when retcode != 0, as FATE answers. RetCode: 0 success, 100 exception, 101
argument error, 102 data error, 103 operating error. gRPC codes map to retcodes in one place,
client/flow_rows.retcode_of (shared with client/flow.py): INVALID_ARGUMENT -> 101,
FAILED_PRECONDITION -> 103, NOT_FOUND -> what FATE answers on that route (given per route),
anything else -> 100. Download routes answer errors with a non-200
HTTP status (FATE's `error_response`), because FATE's client untars any 200 answer.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import grpc
from aiohttp import web

from client.fate_args import party_id_of, role_of
from client.flow_rows import ARGUMENT, AUTHENTICATION, DATA, EXCEPTION, PERMISSION, SUCCESS, retcode_of

from .. import fate_auth
from ..errors import BadRequest, answers, json_response
from ..params import to_bool

C = grpc.StatusCode
__all__ = ["ARGUMENT", "DATA", "EXCEPTION", "SUCCESS", "envelope", "route", "download_route"]


def envelope(data: Any = None, retcode: int = SUCCESS, retmsg: str = "success", job_id: str | None = None,
             meta: Any = None) -> web.Response:
    body = {"retcode": retcode, "retmsg": retmsg, "data": data, "jobId": job_id, "meta": meta}
    return json_response({k: v for k, v in body.items() if v is not None})


# Refused callers get FATE's retcode with the HTTP status the rest of the gateway uses.
AUTH_STATUS = {AUTHENTICATION: 401, PERMISSION: 403}


def signed(handler):
    """First thing on every FATE route: FATE request signing (gateway/fate_auth.py); a refused
    request is answered with FATE's authentication retcode (109, HTTP 401) before anything else."""
    @functools.wraps(handler)
    async def check_then_handle(request: web.Request) -> web.StreamResponse:
        refusal = await fate_auth.check(request)
        if refusal is not None:
            return json_response(refusal, AUTH_STATUS.get(refusal["retcode"], 401))
        return await handler(request)
    return check_then_handle


def refused(code: grpc.StatusCode, message: str) -> web.Response | None:
    retcode = retcode_of(code, EXCEPTION)
    if retcode in AUTH_STATUS:
        return json_response({"retcode": retcode, "retmsg": message}, AUTH_STATUS[retcode])
    return None


def route(not_found: int = ARGUMENT, not_found_data: Any = None):
    """Decorator for a JSON route: every failure becomes the envelope with its retcode (HTTP 200).

    `not_found`: FATE's retcode on this route when the thing asked for does not exist; 0 with
    `not_found_data` means FATE answers success with empty data ("no data").
    """
    def render(status: int, code: grpc.StatusCode, message: str) -> web.Response:
        if (answer := refused(code, message)) is not None:
            return answer
        retcode = retcode_of(code, not_found)
        if retcode == SUCCESS:
            return envelope(not_found_data, retmsg="no data")
        return envelope(retcode=retcode, retmsg=message)
    return lambda handler: signed(answers(render)(handler))


def download_route(fate_status: int):
    """Decorator for a file route: errors are JSON with a non-200 HTTP status (FATE's error_response:
    retcode == HTTP status == `fate_status`; a bad argument is 400 with retcode 101)."""
    def render(status: int, code: grpc.StatusCode, message: str) -> web.Response:
        if (answer := refused(code, message)) is not None:
            return answer
        if code == C.INVALID_ARGUMENT:
            return json_response({"retcode": ARGUMENT, "retmsg": message}, 400)
        return json_response({"retcode": fate_status, "retmsg": message}, fate_status)
    return lambda handler: signed(answers(render)(handler))


# -- reading requests -----------------------------------------------------------------------
async def body_of(request: web.Request) -> dict:
    """The JSON object body ({} when empty); BadRequest with the parser's reason otherwise."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise BadRequest("the body must be UTF-8 JSON") from None
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(data).__name__}")
    return data


def text(body: dict, name: str, *, required: bool = False) -> str:
    """A string field (numbers accepted: flow_sdk sends some ids as ints)."""
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest(f"{name} must be a string, got {json.dumps(value)}")
    return str(value)


def integer(body: dict, name: str, default: int, *, low: int | None = None, high: int | None = None) -> int:
    value = body.get(name)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid parameter '{name}': must be an integer, got {json.dumps(value)}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"Invalid parameter '{name}': must be {bounds}, got {number}")
    return number


def flag(body: dict, name: str) -> bool:
    """A true/false field: a JSON boolean, 0/1 or a word to_bool knows (the flow CLI sends booleans)."""
    value = body.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return to_bool(value, f"Invalid parameter '{name}'")
    raise BadRequest(f"Invalid parameter '{name}': must be true or false, got {json.dumps(value)}")


def party(body: dict) -> tuple[str, int | None]:
    """(role, party_id) from the body or its `local` (flow_sdk sends both); party_id as int or None."""
    local = body.get("local") if isinstance(body.get("local"), dict) else {}
    party_id = body.get("party_id", local.get("party_id"))
    return (role_of(body.get("role", local.get("role"))),
            None if party_id is None or party_id == "" else party_id_of(party_id))


def names(body: dict, name: str) -> list[str]:
    """A field that may be one string or a list of strings."""
    value = body.get(name)
    if value is None or value == "":
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadRequest(f"Invalid parameter '{name}': a string or a list of strings, got {json.dumps(value)}")
    return values
