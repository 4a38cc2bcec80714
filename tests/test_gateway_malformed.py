"""Hundreds of malformed requests: each gets a 4xx answer, never a 500 or a traceback; the server stays healthy."""
from __future__ import annotations

import itertools

from conftest import http

GOOD_UID = "0123456789abcdef0123456789abcdef"
BAD_VALUES = ["", "abc", "-1", "1.5", "9" * 30, "%00", "null", "[]", "{}", "true", "%E2%98%83", "0x10"]
BAD_BODIES = [b"{", b"[1,2", b"\xff\xfe\x00", b"null", b"42", b'"text"', b"[]", b'{"spec": 5}',
              b'{"spec": {"type": "NOPE"}}', b'{"spec": {"argv": "not-a-list"}}', b'{"specs": {}}',
              b'{"spec": {"type": "TASK_TYPE_COMMAND"}}', b'{"spec": {"priority": "high"}}',
              b'{"unknown_field": 1}', b"[" * 100_000 + b"]" * 100_000, b'{"spec": {"timeout_seconds": -1, "type": 1, "argv": ["x"]}}']


def requests() -> list[tuple[str, str, bytes | None, dict]]:
    out: list[tuple[str, str, bytes | None, dict]] = []
    json_ct = {"Content-Type": "application/json"}
    # Wrong types and unknown ids in every id-taking route.
    for v in BAD_VALUES:
        out += [("GET", f"/v1/tasks/{v}", None, {}), ("GET", f"/v1/tasks/{v}/logs", None, {}),
                ("POST", f"/v1/tasks/{v}:cancel", b"{}", json_ct), ("DELETE", f"/v1/tasks/{v}", None, {}),
                ("GET", f"/v1/tasks/{v}:wait", None, {}),
                ("GET", f"/graphspaces/g/graphs/h/tasks/{v}", None, {}),
                ("DELETE", f"/graphspaces/g/graphs/h/tasks/{v}", None, {}),
                ("PUT", f"/graphspaces/g/graphs/h/tasks/{v}?action=cancel", None, {}),
                ("GET", f"/v1/task/metadata?task_id={v}", None, {}),
                ("GET", f"/auto/task_info?task_id={v}", None, {})]
    # Wrong values of optional query parameters (an empty one means "not given", so it is left out).
    for v in BAD_VALUES[1:]:
        out += [("GET", f"/graphspaces/g/graphs/h/tasks?limit={v}", None, {}),
                ("GET", f"/graphspaces/g/graphs/h/tasks?status={v}", None, {}),
                ("GET", f"/v1/task/logs?task_id=1&start={v}", None, {}),
                ("GET", f"/v1/task/list?page={v}", None, {}),
                ("GET", f"/v1/tasks?limit={v}", None, {}),
                ("GET", f"/v1/tasks?statuses={v}", None, {})]
    # Bad JSON bodies.
    for body in BAD_BODIES:
        out += [("POST", "/v1/tasks", body, json_ct), ("POST", "/v1/tasks:batchCreate", body, json_ct),
                ("POST", "/v1/tasks/1:cancel", body, json_ct)]
    # Unknown ids, missing params, repeated params, disallowed and odd modules.
    out += [
        ("GET", "/v1/tasks/987654321", None, {}), ("GET", "/v1/tasks/987654321/logs", None, {}),
        ("GET", "/v1/tasks/987654321:wait", None, {}), ("DELETE", "/v1/tasks/987654321", None, {}),
        ("GET", "/graphspaces/g/graphs/h/tasks/987654321", None, {}),
        ("PUT", "/graphspaces/g/graphs/h/tasks/987654321?action=cancel", None, {}),
        ("PUT", "/graphspaces/g/graphs/h/tasks/1", None, {}),
        ("PUT", "/graphspaces/g/graphs/h/tasks/1?action=cancel&action=cancel", None, {}),
        ("DELETE", "/graphspaces/g/graphs/h/tasks/1?force=perhaps", None, {}),
        ("GET", "/v1/task/metadata", None, {}), ("GET", "/v1/task/metadata?task_id=987654321", None, {}),
        ("GET", "/v1/task/logs", None, {}), ("GET", "/v1/task/result", None, {}),
        ("GET", "/v1/task/result?task_id=987654321", None, {}), ("GET", "/v1/task/list?page_size=0", None, {}),
        ("GET", "/v1/task/metadata?task_id=1&task_id=2", None, {}),
        ("POST", "/v1/task", b"", {}), ("POST", "/v1/task", b"--x\r\nbroken", {"Content-Type": "multipart/form-data; boundary=x"}),
        ("POST", "/v1/task", b"data", {"Content-Type": "multipart/form-data"}),
        ("GET", "/auto/run", None, {}), ("GET", "/auto/run?module=", None, {}), ("GET", "/auto/run?module=x", None, {}),
        ("GET", "/auto/run?module=os&name=system", None, {}), ("GET", "/auto/run?module=os&only_parse=1", None, {}),
        ("GET", "/auto/run?module=starter&only_parse=maybe", None, {}),
        ("GET", "/auto/run?module=..&only_parse=1", None, {}), ("GET", "/auto/run?module=a%20b&only_parse=1", None, {}),
        ("GET", "/auto/run?module=starter.x&name=y&task_ns=has%20space", None, {}),
        ("GET", "/auto/run?module=starter.x&name=y&bind_arg.=1", None, {}),
        ("GET", "/auto/run?module=starter.x&name=y&k=1&k=2", None, {}),
        ("GET", "/auto/task_info", None, {}), ("GET", f"/auto/task_info?task_id={GOOD_UID}", None, {}),
        ("GET", "/v1/modules/os", None, {}), ("GET", "/v1/modules/starter.missing", None, {}),
        ("GET", "/v1/modules/1abc", None, {}),
        ("GET", "/v1/tasks?unknown=1", None, {}), ("GET", "/v1/tasks?page_token=zzz", None, {}),
("GET", "/v1/tasks/1?uid.x=1", None, {}),
        ("GET", "/v1/tasks?statuses.x=1", None, {}),
        ("GET", "/v1/nodes/nope", None, {}), ("POST", "/v1/nodes/nope:drain", b"{", json_ct),
        ("POST", "/v1/taskgroups/templates", b'{"name": 5}', json_ct),
        ("POST", "/v1/taskgroups/instances", b"[]", json_ct), ("GET", "/v1/taskgroups/instances/none", None, {}),
    ]
    # Odd paths and methods.
    for method, path in itertools.product(["GET", "POST", "PATCH"], [
            "/ui/nope", "/ui/static/%2e%2e/ui.py", "/ui/static/nope.js", "/v1", "/v1/tasks/1/2/3", "/auto", "/auto/run/x", "/graphspaces/g/graphs", "/graphspaces//graphs//tasks",
            "/v1/task/", "/%2e%2e/etc/passwd", "/v1/tasks/1:explode"]):
        out.append((method, path, None, {}))
    out += [("POST", "/", None, {}), ("PATCH", "/", None, {}),  # GET / is the dashboard
            ("PATCH", "/v1/tasks/1", b"{}", json_ct), ("POST", "/auto/run", b"{}", json_ct),
            ("DELETE", "/v1/task/metadata?task_id=1", None, {})]
    return out


def test_malformed_requests_get_4xx_and_server_stays_healthy(server):
    cases = requests()
    assert len(cases) >= 200
    wrong = []
    for method, path, body, headers in cases:
        answer = http(method, server.http_url + path, body, headers)
        if not 400 <= answer.status < 500 or b"Traceback" in answer.body:
            wrong.append((method, path, body, answer))
    assert not wrong, "\n".join(map(repr, wrong))
    assert not [line for line in server.output if "Traceback" in line or "taskhub.gateway" in line]
    # Still serving, on both faces.
    assert http("GET", server.http_url + "/v1/tasks").status == 200
    c = server.client()
    task = c.create_task(argv=["echo", "still here"])
    assert c.wait(task.id).result == "still here"
