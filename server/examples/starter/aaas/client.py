"""aaas client entries: run a module entry on a taskhub and wait for it, read a task's info.

Seed 001 starts by describing this module (`/auto/run?module=starter.aaas.client&only_parse=1`).
The entries speak a taskhub's aaas HTTP routes (`/auto/run`, `/auto/task_info`), so they work
as tasks (one taskhub driving another, or itself) and as plain functions anywhere:

    from starter.aaas.client import run_task
    info = run_task("starter.helloworld.auto", "hook_task", task_ns="test",
                    bind_arg={"example_task": {"range": {"start": 5}}}, server="http://127.0.0.1:8080")
    info["task_resp"]

or as a task: `/auto/run?module=starter.aaas.client&name=run_task&bind_arg.module=starter.helloworld.auto
&bind_arg.name=hook_task&bind_arg.bind_arg.example_task.range.start=5&bind_arg.server=http://HOST:PORT`.

`server` is the taskhub's HTTP gateway; empty means $TASKHUB_URL, else http://127.0.0.1:8080
(`taskhub serve`'s default). Values that arrive from a query are strings; the entries convert
them. Run as a task, run_task and wait_task hold a Python worker while they wait, so the task
they wait for needs another one (`taskhub serve --python-workers`).
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_SERVER = "http://127.0.0.1:8080"
DONE_FLAGS = {1: "succeeded", 2: "failed", 3: "cancelled"}
HTTP_TIMEOUT = 60.0


class AaasError(RuntimeError):
    """The aaas routes refused a call, or the task waited for did not succeed."""


def start_task(module: str, name: str, task_ns: str = "default", bind_arg: dict | None = None,
               server: str = "", ctx=None) -> dict:
    """Starts entry `name` of `module` on the taskhub at `server` (GET /auto/run) and returns the run
    data: task_id, task_ns, module, name, run_opts, create_time. `bind_arg` (nested) becomes the
    entry's keyword arguments, sent as bind_arg.<path>=<value> query parameters."""
    query = {"module": module, "name": name, "task_ns": task_ns or "default"}
    query.update(_flatten("bind_arg", _as_dict(bind_arg, "bind_arg")))
    data = _call(server, "/auto/run", query)
    if ctx is not None:
        ctx.log(f"aaas: started {module}:{name} as task {data['task_id']} in namespace {data['task_ns']}")
    return data


def wait_task(task_id: str, task_ns: str = "", server: str = "", timeout: float = 600.0, ctx=None) -> dict:
    """Waits until task `task_id` has ended (its done_flag is above 0) and returns its task info.
    Raises AaasError when it did not succeed or `timeout` seconds pass first."""
    timeout = float(timeout)
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        data = task_info(task_id, task_ns, server)
        flag = data.get("done_flag", 0)
        if flag:
            break
        if time.monotonic() + pause > deadline:
            raise AaasError(f"task {task_id} has not ended after {timeout:g} s")
        if ctx is None:
            time.sleep(pause)
        elif ctx.wait_cancelled(pause):
            ctx.log(f"aaas: stopped waiting for task {task_id}: this task was cancelled")
            ctx.check_cancelled()
        pause = min(pause * 2, 1.0)
    if ctx is not None:
        ctx.respond("task", data)
        ctx.log(f"aaas: task {task_id} {DONE_FLAGS.get(flag, f'ended with done_flag {flag}')}")
    if flag != 1:
        reason = data.get("error") or DONE_FLAGS.get(flag, f"done_flag {flag}")
        raise AaasError(f"task {task_id} did not succeed: {reason}")
    return data


def run_task(module: str, name: str, task_ns: str = "default", bind_arg: dict | None = None,
             server: str = "", timeout: float = 600.0, ctx=None) -> dict:
    """Runs entry `name` of `module` on the taskhub at `server` and waits for it: start_task, then
    wait_task. Returns the task info (task_resp holds what the entry set); raises AaasError when
    the task fails, is cancelled, or outlasts `timeout` seconds."""
    started = start_task(module, name, task_ns, bind_arg, server, ctx)
    return wait_task(started["task_id"], started["task_ns"], server, timeout, ctx)


def task_info(task_id: str, task_ns: str = "", server: str = "") -> dict:
    """Reads task `task_id`'s info (GET /auto/task_info): the run data, process {pid, ppid} once it
    started, done_flag (0 queued or running, 1 succeeded, 2 failed, 3 cancelled), done_time,
    task_resp, and end_flag when it was ended while queued. Empty `task_ns` searches every namespace."""
    query = {"task_id": task_id}
    if task_ns:
        query["task_ns"] = task_ns
    return _call(server, "/auto/task_info", query)


# -- helpers (private: the module's description lists only the entries above) ---------------
def _base(server: str) -> str:
    url = (server or os.environ.get("TASKHUB_URL") or DEFAULT_SERVER).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise AaasError(f"server must be an http:// or https:// URL, got {url!r}")
    return url


def _call(server: str, path: str, query: dict) -> dict:
    url = f"{_base(server)}{path}?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise AaasError(f"GET {path} on {_base(server)} failed: {getattr(e, 'reason', e)}") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise AaasError(f"GET {path}: HTTP {status}, not an aaas answer: {raw[:200]!r}") from None
    if not isinstance(body, dict) or body.get("code") != 0:
        msg = body.get("msg") if isinstance(body, dict) else body
        code = body.get("code") if isinstance(body, dict) else None
        raise AaasError(f"GET {path}: HTTP {status}, code {code}: {msg}")
    return body["data"]


def _as_dict(value, what: str) -> dict:
    if value is None or value == "":
        return {}
    if isinstance(value, str):  # a JSON object given as one query value
        try:
            value = json.loads(value)
        except ValueError:
            raise AaasError(f"{what} must be an object (or its JSON text), got {value!r}") from None
    if not isinstance(value, dict):
        raise AaasError(f"{what} must be an object, got {type(value).__name__}")
    return value


def _flatten(prefix: str, value) -> dict[str, str]:
    """{"a": {"b": 5}} under "bind_arg" -> {"bind_arg.a.b": "5"}: the query form /auto/run nests back."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(_flatten(f"{prefix}.{key}", inner))
        return out
    return {prefix: value if isinstance(value, str) else json.dumps(value)}
