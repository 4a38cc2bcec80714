"""What FlowClient's nouns share (client/flow.py, client/flow_models.py): FATE's answer dict, the
decorator that turns an RPC failure into it, reading confs, and the base of every noun."""
from __future__ import annotations

import functools
import json
from typing import Any, Callable

import grpc

from . import flow_rows as rows

CHUNK = 1 << 20


def answer(data: Any = None, retcode: int = rows.SUCCESS, retmsg: str = "success", job_id: str | None = None,
           meta: Any = None, **extra) -> dict:
    body = {"retcode": retcode, "retmsg": retmsg, "data": data, "jobId": job_id, "meta": meta, **extra}
    return {k: v for k, v in body.items() if v is not None}


def fate_call(not_found: int = rows.ARGUMENT, not_found_data: Any = None):
    """An RPC failure becomes FATE's answer with the route's retcode; bad arguments are 101."""
    def wrap(fn: Callable[..., dict]):
        @functools.wraps(fn)
        def call(*args, **kwargs) -> dict:
            try:
                return fn(*args, **kwargs)
            except grpc.RpcError as e:
                retcode = rows.retcode_of(e.code(), not_found)
                if retcode == rows.SUCCESS:
                    return answer(not_found_data, retmsg="no data")
                return answer(retcode=retcode, retmsg=e.details() or e.code().name)
            except (ValueError, TypeError, OSError) as e:  # fate_args.ArgumentError is a ValueError
                return answer(retcode=rows.ARGUMENT, retmsg=str(e))
        return call
    return wrap


def load_json(conf: str | dict | None, what: str) -> dict:
    """A conf given as a dict or as the path of a JSON file."""
    if conf is None:
        return {}
    if isinstance(conf, dict):
        return conf
    with open(conf, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except ValueError as e:
            raise ValueError(f"{what} {conf} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {conf} must hold a JSON object")
    return data


class Noun:
    """One of FlowClient's nouns (job, model, ...): calls its owner's FlowService stub."""

    def __init__(self, owner: "FlowClient"):
        self._owner = owner

    @property
    def _stub(self):
        return self._owner.taskhub.flow

    @property
    def _timeout(self):
        return self._owner.timeout
