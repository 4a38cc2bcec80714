"""Every RPC of every service has a method in the typed client: some method of TaskhubClient (or
of its typed sub-clients) or of FlowClient's nouns calls it. The RPCs are read from the generated
descriptors, as the rule-table test does (tests/test_auth_rules.py); the methods from the source."""
from __future__ import annotations

import ast

from conftest import REPO
from test_auth_rules import all_rpcs

# The typed client's modules: TaskhubClient and its sub-clients, FlowClient and its nouns.
CLIENT_MODULES = ("client/client.py", "client/typed.py", "client/flow.py", "client/flow_models.py")
# Calls that only a running task or an agent makes, with the server's own credentials for it
# (server/flow/runtime.py, server/delta/runtime.py, server/node/agent.py): not for users.
INTERNAL = {
    "/taskhub.v1.NodeService/Connect": "the node agent's stream",
    "/taskhub.v1.FlowService/WriteTable": "a FATE component task's output",
    "/taskhub.v1.FlowService/PutTracking": "a FATE component task's metrics",
    "/taskhub.v1.FlowService/FederationSend": "between the parties' component tasks",
    "/taskhub.v1.FlowService/FederationReceive": "between the parties' component tasks",
    "/taskhub.v1.DeltaService/StartDeltaClients": "a Delta coordinator task",
    "/taskhub.v1.DeltaService/DeltaSend": "between a Delta task's coordinator and clients",
    "/taskhub.v1.DeltaService/DeltaReceive": "between a Delta task's coordinator and clients",
    # Server to server (issue 19): only another FATE party's server calls these, with its certificate.
    **{f"/taskhub.v1.SiteService/{m}": "between the FATE parties' servers"
       for m in ("OfferJob", "StartComponents", "EndJob", "ReportTask", "Deliver", "DeliverBatch", "DeployPart")},
}


def public_functions(tree: ast.Module):
    """(qualified name, node) of the module's public functions and its classes' public methods."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for fn in node.body:
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and not fn.name.startswith("_"):
                    yield f"{node.name}.{fn.name}", fn


def methods_calling() -> dict[str, list[str]]:
    """RPC name -> ["module:Class.method", ...] of the public methods that use `<stub>.<RPC>`."""
    found: dict[str, list[str]] = {}
    for rel in CLIENT_MODULES:
        tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
        for name, fn in public_functions(tree):
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and node.attr[:1].isupper():
                    found.setdefault(node.attr, []).append(f"{rel}:{name}")
    return found


def test_every_rpc_has_a_typed_client_method():
    rpcs = all_rpcs()
    found = methods_calling()
    missing = [r for r in rpcs if r not in INTERNAL and r.rsplit("/", 1)[1] not in found]
    assert not missing, f"RPCs with no method in the typed client: {missing}"


def test_internal_rpcs_exist():
    assert set(INTERNAL) <= set(all_rpcs())


def test_the_new_typed_methods_answer_from_a_real_server(server):
    c = server.client(namespace="complete")
    watch = c.watch_tasks()
    task = c.create_task(argv=["true"], name="seen-by-watch")
    seen = next(t for batch in watch for t in batch.tasks if t.id == task.id)
    watch.cancel()
    assert seen.spec.name == "seen-by-watch"
    described = c.describe_module("starter.examples")
    assert "count" in [e.name for e in described.entries]
    assert [n.name for n in c.nodes.list_nodes()] == [c.nodes.get_node(n.name).name for n in c.nodes.list_nodes()]
    assert c.groups.list_templates() == [] and c.groups.list_instances() == []
    predict = c.flow.generate_dsl({"components": {"reader_0": {"module": "Reader", "output": {"data": ["data"]}}}},
                                  ["reader_0"])
    assert "reader_0" in predict["components"]
