"""GET /metrics moves with real work; GET /openapi.json lists every annotated RPC, from the protos."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from prometheus_client.parser import text_string_to_metric_families
from taskhub.v1 import node_service_pb2
from taskhub.v1 import task_pb2 as pb

from conftest import http, wait_for
from gateway import openapi


def scrape(server) -> dict[tuple, float]:
    answer = http("GET", server.http_url + "/metrics")
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def value(values, name, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_real_work(server, client):
    before = scrape(server)
    task = client.create_task(argv=["sh", "-c", "echo one; echo two; echo three"], namespace="obs")
    assert client.wait(task.id, namespace="obs").status == pb.TASK_STATUS_SUCCESS
    with pytest.raises(grpc.RpcError):
        client.get_task(999_999, namespace="obs")
    rpc = dict(grpc_type="unary", grpc_service="taskhub.v1.TaskService")
    not_found = dict(grpc_method="GetTask", grpc_code="NOT_FOUND", **rpc)

    def settled():
        # Log lines are committed just after the task ends (fire-and-forget writes), and an aborted
        # call's status reaches the client a moment before the server counts it: wait for both.
        v = scrape(server)
        return v if (value(v, "taskhub_log_lines_written_total") >= value(before, "taskhub_log_lines_written_total") + 3
                     and value(v, "grpc_server_handled_total", **not_found) > value(before, "grpc_server_handled_total", **not_found)) else None
    after = wait_for(settled, what="log lines and the failed call in /metrics")

    assert value(after, "taskhub_tasks_created_total", namespace="obs") == value(before, "taskhub_tasks_created_total", namespace="obs") + 1
    assert value(after, "taskhub_tasks_finished_total", namespace="obs", status="success") == \
        value(before, "taskhub_tasks_finished_total", namespace="obs", status="success") + 1
    assert value(after, "taskhub_task_submit_to_running_seconds_count") >= value(before, "taskhub_task_submit_to_running_seconds_count") + 1
    assert value(after, "taskhub_store_commit_seconds_count") > value(before, "taskhub_store_commit_seconds_count")
    assert value(after, "grpc_server_handled_total", grpc_method="CreateTask", grpc_code="OK", **rpc) == \
        value(before, "grpc_server_handled_total", grpc_method="CreateTask", grpc_code="OK", **rpc) + 1
    assert value(after, "grpc_server_handled_total", **not_found) == value(before, "grpc_server_handled_total", **not_found) + 1
    assert value(after, "grpc_server_handling_seconds_count", grpc_method="CreateTask", **rpc) >= 1
    assert value(after, "taskhub_nodes", state="online") >= 1
    node = client.nodes.ListNodes(node_service_pb2.ListNodesRequest()).nodes[0]
    assert value(after, "taskhub_node_slots", node=node.name) == node.slots


def test_running_and_queue_levels(server, client):
    task = client.create_task(argv=["sleep", "30"], namespace="obs")
    wait_for(lambda: client.get_task(task.id, namespace="obs").status == pb.TASK_STATUS_RUNNING, what="running")
    now = scrape(server)
    assert value(now, "taskhub_tasks_running") >= 1
    assert value(now, "taskhub_tasks_unfinished", status="running") >= 1
    assert ("taskhub_queue_depth", ()) in now
    client.cancel_task(task.id, namespace="obs")
    assert client.wait(task.id, namespace="obs").status == pb.TASK_STATUS_CANCELLED
    wait_for(lambda: value(scrape(server), "taskhub_tasks_finished_total", namespace="obs", status="cancelled") >= 1,
             what="the cancelled task counted")


def annotated_rpcs(files) -> list[tuple[str, str, str, str]]:
    """(service, method, verb, path) of every google.api.http binding in the files."""
    out = []
    for f in files:
        for s in f.service:
            for m in s.method:
                if not m.options.HasExtension(annotations_pb2.http):
                    continue
                rule = m.options.Extensions[annotations_pb2.http]
                for r in [rule, *rule.additional_bindings]:
                    kind = r.WhichOneof("pattern")
                    verb, path = (r.custom.kind, r.custom.path) if kind == "custom" else (kind, getattr(r, kind))
                    out.append((s.name, m.name, verb.lower(), path))
    return out


def test_openapi_lists_every_annotated_rpc(server):
    answer = http("GET", server.http_url + "/openapi.json")
    assert answer.status == 200, answer
    doc = answer.json()
    assert doc["openapi"].startswith("3.")
    files = [f for f in openapi.load_files() if f.package == "taskhub.v1"]
    rpcs = annotated_rpcs(files)
    assert len(rpcs) >= 20
    for service, method, verb, path in rpcs:
        op = doc["paths"].get(path, {}).get(verb)
        assert op is not None, f"{service}.{method} ({verb.upper()} {path}) is missing from /openapi.json"
        assert op["operationId"] == f"{service}_{method}"
        assert op["description"], f"{service}.{method} has no description (proto comments lost?)"
    create = doc["paths"]["/v1/tasks"]["post"]
    assert create["summary"] == "Creates one task; returns after it is committed to the store"
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskSpec"}
    logs = doc["paths"]["/v1/tasks/{id}/logs"]["get"]
    assert "text/event-stream" in logs["responses"]["200"]["content"]
    assert {p["name"] for p in logs["parameters"]} >= {"id", "offset", "follow", "namespace"}
    assert doc["components"]["schemas"]["TaskStatus"]["enum"][0] == "TASK_STATUS_UNSPECIFIED"
    assert doc["components"]["schemas"]["Task"]["properties"]["id"]["type"] == "string"  # int64 as JSON string
    # The legacy families' routes, read from the running gateway.
    for path, verb, tag in [("/auto/run", "get", "aaas"), ("/graphspaces/{gs}/graphs/{g}/tasks/{id}", "delete", "hugegraph"),
                            ("/api/task/node", "get", "taskgroups"), ("/v1/task", "post", "delta"), ("/metrics", "get", "gateway")]:
        assert doc["paths"][path][verb]["tags"] == [tag]
    page = http("GET", server.http_url + "/ui/api")
    assert page.status == 200 and b"openapi.js" in page.body


def test_openapi_document_is_valid(server):
    """A spec validator accepts /openapi.json (client generators refuse a document it rejects)."""
    from openapi_spec_validator import validate
    doc = http("GET", server.http_url + "/openapi.json").json()
    validate(doc)  # raises on any error, e.g. an operationId used twice
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert doc["paths"]["/ui"]["get"]["operationId"] != doc["paths"]["/ui/"]["get"]["operationId"]


NEW_PROTO = """
syntax = "proto3";
package demo.v1;
import "google/api/annotations.proto";

// Widgets for the test.
service Widgets {
  // Spins a widget until it is dizzy.
  rpc Spin(SpinRequest) returns (SpinReply) {
    option (google.api.http) = {post: "/v1/widgets/{name}:spin" body: "*"};
  }
  // Not on HTTP.
  rpc Hidden(SpinRequest) returns (SpinReply);
}
// Spin input.
message SpinRequest {
  // Which widget.
  string name = 1;
  // How many turns.
  int64 turns = 2;
}
// Spin output.
message SpinReply { repeated string log = 1; }
"""


def test_a_new_annotated_rpc_appears_without_editing_anything(tmp_path):
    (tmp_path / "demo.proto").write_text(NEW_PROTO)
    import google.api
    from pathlib import Path
    include = Path(google.api.__path__[0]).parent.parent
    out = tmp_path / "set.binpb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", f"-I{include}", "--include_source_info",
                    "--include_imports", f"--descriptor_set_out={out}", "demo.proto"], check=True)
    files = list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)
    doc = openapi.build_document(files=files, services=["demo.v1.Widgets"])
    op = doc["paths"]["/v1/widgets/{name}:spin"]["post"]
    assert op["operationId"] == "Widgets_Spin"
    assert op["summary"] == "Spins a widget until it is dizzy"
    assert [p["name"] for p in op["parameters"]] == ["name"]
    props = doc["components"]["schemas"]["demo.v1.SpinRequest"]["properties"]
    assert props["turns"] == {"type": "string", "format": "int64", "description": "How many turns."}
    assert len(doc["paths"]) == 1  # Hidden has no annotation


def test_the_grafana_dashboard_uses_only_served_metrics(server, client):
    import json
    import re
    from conftest import REPO
    client.create_task(argv=["true"])  # so every labelled family has a sample
    served = {name for name, _ in scrape(server)}
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(?:taskhub|grpc_server)_[a-z_]+", e)}
    assert used - {"taskhub_flow_jobs"} <= served, f"not in /metrics: {sorted(used - served)}"
