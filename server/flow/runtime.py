"""Runs one FATE component task inside a taskhub worker: the other end of FlowData/Federation.

The engine runs `run_component` as an ordinary Python task whose input the job scheduler wrote
(job, component, role, party, merged parameters, input tables, input models). Everything the
component reads or writes goes back to the server over gRPC (TASKHUB_SERVER), named by this
task's uid, so the task may run on any node.
"""
from __future__ import annotations

import importlib
import json
import os
import pickle
import threading
from typing import Any, Iterable, Iterator, Sequence

import grpc
from taskhub.v1 import flow_service_pb2 as pb
from taskhub.v1 import flow_service_pb2_grpc as pb_grpc

from client.credentials import open_channel
from client.servers import is_list

from .components.base import Component, ComponentError, decode_row, encode_row

WRITE_BATCH = 5_000
RECEIVE_POLL = 5.0   # seconds per FederationReceive call, so cancellation is noticed between calls
# No transparent retries: a replayed WriteTable or FederationSend would do its work twice.
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
            ("grpc.enable_retries", 0)]
_channels: dict[str, grpc.Channel] = {}
_lock = threading.Lock()


def _stub(target: str) -> pb_grpc.FlowServiceStub:
    with _lock:  # one channel per worker process, reused by every task it runs
        ch = _channels.get(target)
        if ch is None:
            # A TLS server: the agent passes down its CA (and client certificate, for mutual TLS). A list
            # of servers (an agent of several) gives a channel that fails over by itself.
            ch = open_channel(target, token="", tls_ca=os.environ.get("TASKHUB_TLS_CA", ""),
                              tls_cert=os.environ.get("TASKHUB_TLS_CERT", ""),
                              tls_key=os.environ.get("TASKHUB_TLS_KEY", ""), options=_OPTIONS)
            _channels[target] = ch
            if not is_list(target):
                grpc.channel_ready_future(ch).result(timeout=60)  # the server may still be starting
    return pb_grpc.FlowServiceStub(ch)


def _metadata() -> list[tuple[str, str]]:
    token = os.environ.get("TASKHUB_TOKEN")
    return [("authorization", f"Bearer {token}")] if token else []


class RemoteTable:
    """An input table read from the server on demand."""

    def __init__(self, stub, namespace: str, name: str, source: str | None = None):
        self._stub = stub
        self.namespace, self.name = namespace, name
        self.source = source          # the component that wrote it (Evaluation names metrics after it)
        first = next(iter(self._stub.ReadTable(pb.ReadTableRequest(namespace=namespace, name=name, limit=1),
                                               metadata=_metadata())))
        self.schema = json.loads(first.table.schema_json or "{}")
        self.count = first.table.count

    @property
    def header(self) -> list[str]:
        return list(self.schema.get("header", []))

    def rows(self) -> Iterator[list[str]]:
        for msg in self._stub.ReadTable(pb.ReadTableRequest(namespace=self.namespace, name=self.name),
                                        metadata=_metadata()):
            for line in msg.lines:
                yield decode_row(line)


class RemoteFederation:
    """Messages of this component only: tags carry the component's name, so components of one job that
    run at the same time (intersection_0 and intersection_1 of a validate DSL) never read each other's."""

    def __init__(self, ctx: "RuntimeContext"):
        self._ctx = ctx
        self._scope = f"{ctx.component_name}."

    def _parties(self, role: str, idx: int) -> list[int]:
        ids = self._ctx.roles.get(role) or []
        if not ids:
            raise ComponentError(f"this job has no {role}")
        return ids if idx < 0 else [ids[idx]]

    def remote(self, obj: Any, name: str, tag: str, role: str, idx: int = -1) -> None:
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        for party in self._parties(role, idx):
            self._ctx._stub.FederationSend(pb.FederationSendRequest(
                task_uid=self._ctx._uid, name=name, tag=self._scope + tag, dst_role=role, dst_party_id=party,
                payload=payload),
                metadata=_metadata())

    def get(self, name: str, tag: str, role: str, idx: int = -1) -> list[Any]:
        out = []
        for party in self._parties(role, idx):
            while True:
                self._ctx.check_cancelled()
                try:
                    resp = self._ctx._stub.FederationReceive(pb.FederationReceiveRequest(
                        task_uid=self._ctx._uid, name=name, tag=self._scope + tag, src_role=role, src_party_id=party,
                        timeout_seconds=RECEIVE_POLL), metadata=_metadata())
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        continue
                    raise ComponentError(f"waiting for {name}/{tag} from {role} {party}: {e.details()}") from None
                out.append(pickle.loads(resp.payload))
                break
        return out


class RuntimeContext:
    """The ComponentContext of server/flow/components/base.py, backed by the server."""

    def __init__(self, task_ctx, spec: dict, target: str):
        self._task = task_ctx
        self._uid = task_ctx.uid
        self._stub = _stub(target)
        self._spec = spec
        self.job_id = spec["job_id"]
        self.component_name = spec["component"]
        self.module = spec["module"]
        self.role = spec["role"]
        self.party_id = int(spec["party_id"])
        self.roles = {r: [int(p) for p in ids] for r, ids in spec["roles"].items()}
        self.params = spec["params"]
        self.job_parameters = spec["job_parameters"]
        self.federation = RemoteFederation(self)

    @property
    def party_index(self) -> int:
        return self.roles[self.role].index(self.party_id)

    def input_tables(self, key: str = "data") -> list[RemoteTable]:
        return [RemoteTable(self._stub, t["namespace"], t["name"], t.get("component"))
                for t in self._spec["inputs"].get(key, [])]

    def read_table(self, namespace: str, name: str) -> RemoteTable:
        try:
            return RemoteTable(self._stub, namespace, name)
        except grpc.RpcError as e:
            raise ComponentError(f"cannot read table {namespace}.{name}: {e.details()}") from None

    def input_model(self, key: str = "model") -> list[dict]:
        out = []
        for ref in self._spec["models"].get(key, []):
            if "model" in ref:  # a deployed model's component (predict jobs), given whole in the task input
                out.append({"model": ref["model"], "meta": ref.get("meta") or {}, "component": ref["component"]})
                continue
            resp = self._stub.GetComponentOutput(pb.GetComponentOutputRequest(
                job_id=ref["job_id"], component_name=ref["component"], role=self.role, party_id=self.party_id),
                metadata=_metadata())
            if resp.model_json:
                out.append({"model": json.loads(resp.model_json), "meta": json.loads(resp.model_meta_json or "{}"),
                            "component": ref["component"]})
        return out

    def write_table(self, rows: Iterable[Sequence[Any]], schema: dict, name: str = "data") -> RemoteTable:
        def requests():
            yield pb.WriteTableRequest(task_uid=self._uid, output_name=name, schema_json=json.dumps(schema))
            batch: list[str] = []
            for row in rows:
                batch.append(encode_row(row))
                if len(batch) >= WRITE_BATCH:
                    yield pb.WriteTableRequest(lines=batch)
                    batch = []
            if batch:
                yield pb.WriteTableRequest(lines=batch)

        info = self._stub.WriteTable(requests(), metadata=_metadata())
        return RemoteTable(self._stub, info.namespace, info.name)

    def _track(self, **kw) -> None:
        self._stub.PutTracking(pb.PutTrackingRequest(task_uid=self._uid, **kw), metadata=_metadata())

    def save_model(self, model: dict, meta: dict, name: str = "model") -> None:
        self._track(model_json=json.dumps(model), model_meta_json=json.dumps({**meta, "output_name": name}))

    def metric(self, namespace: str, name: str, data, meta: dict | None = None) -> None:
        self._track(metrics=[pb.FlowMetric(namespace=namespace, name=name, data_json=json.dumps([list(p) for p in data]),
                                           meta_json=json.dumps(meta) if meta is not None else "")])

    def summary(self, values: dict) -> None:
        self._track(summary_json=json.dumps(values))

    def log(self, message: str) -> None:
        self._task.log(message)

    def progress(self, percent: int) -> None:
        self._task.progress(percent)

    @property
    def cancelled(self) -> bool:
        return self._task.cancelled

    def check_cancelled(self) -> None:
        self._task.check_cancelled()


def load_component(path: str) -> type[Component]:
    module_name, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise ComponentError(f"{path} is not a Component class")
    return cls


def run_component(ctx, **spec) -> str:
    target = os.environ.get("TASKHUB_SERVER")
    if not target:
        raise ComponentError("TASKHUB_SERVER is not set: this worker does not know its server")
    cls = load_component(spec["component_class"])
    rctx = RuntimeContext(ctx, spec, target)
    ctx.log(f"{spec['component']} ({spec['module']}) starts as {spec['role']} {spec['party_id']}")
    component = cls(spec["params"])
    component.run(rctx)
    ctx.log(f"{spec['component']} finished")
    return "success"
