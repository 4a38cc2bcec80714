"""Runs a Delta task inside taskhub workers: the coordinator (reduce side) and the clients (map side).

Both are ordinary trusted Python tasks (server/delta/service.py creates them). The task travels as
delta.serialize.dump_task's bytes and is loaded only here, in a worker. Each step:
  coordinator -> client i: `down/<step>/<i>`, the server-side variables the step's map needs
  client i -> coordinator: `up/<step>/<i>`, what the step's map-reduce operators uploaded
The coordinator sums each upload over the clients (delta-task's `gather` contract: the summed
values and the number of clients), then runs the step's reduce. After the last step (or an
EarlyStop) it sends `down/<next>/<i>` = stop and waits for each `bye/<i>`. Clients read datasets only from their node's data
directory ($TASKHUB_DATA_DIR); their raw rows never leave it. With more than one client the
uploads are masked pairwise (secagg.py): the coordinator learns only their sum.
"""
from __future__ import annotations

import base64
import os
import pickle
import threading

import grpc
from taskhub.v1 import delta_service_pb2 as pb
from taskhub.v1 import delta_service_pb2_grpc as pb_grpc

from client.credentials import open_channel
from client.servers import is_list

from . import secagg

RECEIVE_POLL = 5.0  # seconds per DeltaReceive call, so cancellation is noticed between calls
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
            ("grpc.enable_retries", 0)]
_channels: dict[str, grpc.Channel] = {}
_lock = threading.Lock()


class DeltaRunError(RuntimeError):
    pass


def _stub() -> pb_grpc.DeltaServiceStub:
    target = os.environ.get("TASKHUB_SERVER", "")
    if not target:
        raise DeltaRunError("TASKHUB_SERVER is not set: a Delta task runs only as a taskhub task")
    with _lock:  # one channel per worker process
        ch = _channels.get(target)
        if ch is None:  # a list of servers (an agent of several) fails over by itself
            ch = open_channel(target, token="", tls_ca=os.environ.get("TASKHUB_TLS_CA", ""), options=_OPTIONS)
            _channels[target] = ch
            if not is_list(target):
                grpc.channel_ready_future(ch).result(timeout=60)
    return pb_grpc.DeltaServiceStub(ch)


def _metadata() -> list[tuple[str, str]]:
    token = os.environ.get("TASKHUB_TOKEN")
    return [("authorization", f"Bearer {token}")] if token else []


def _call(fn, request):
    try:
        return fn(request, metadata=_metadata())
    except grpc.RpcError as e:
        raise DeltaRunError(e.details() or str(e.code())) from None


class Link:
    """This task's end of the exchange."""

    def __init__(self, ctx):
        self.ctx, self.stub = ctx, _stub()

    def send(self, key: str, value) -> None:
        _call(self.stub.DeltaSend, pb.DeltaSendRequest(task_uid=self.ctx.uid, key=key, payload=pickle.dumps(value)))

    def receive(self, key: str):
        while True:
            if self.ctx.cancelled:
                raise DeltaRunError("cancelled")
            resp = _call(self.stub.DeltaReceive,
                         pb.DeltaReceiveRequest(task_uid=self.ctx.uid, key=key, timeout_seconds=RECEIVE_POLL))
            if resp.found:
                return pickle.loads(resp.payload)


def _load_task(text: str):
    from delta.core.task import Task
    task = pickle.loads(base64.b64decode(text))
    if not isinstance(task, Task):
        raise DeltaRunError("the uploaded file is not a Delta task")
    return task


def _contexts():
    """delta-task's context classes, subclassed here (delta is imported only in workers)."""
    from delta.core.task import ClientContext, DataFormat, DataLocation, InputGraphNode, ServerContext
    from delta.dataset import load_dataframe, load_dataset

    class _State:
        """The variables both kinds of context keep by name (Delta's set/has)."""
        state: dict

        def set(self, *pairs):
            for var, value in pairs:
                self.state[var.name] = value

        def has(self, key) -> bool:
            return key in self.state

    class NodeClientContext(_State, ClientContext):
        def __init__(self, data_dir: str):
            self.data_dir = data_dir
            self.state: dict = {}
            self.server_vars: dict = {}
            self.uploads: dict = {}

        def get(self, *variables):
            out = []
            for var in variables:
                if var.location == DataLocation.SERVER:
                    if var.name not in self.server_vars:
                        raise KeyError(f"server variable {var.name} was not sent to this client")
                    out.append(self.server_vars[var.name])
                    continue
                value = self.state.get(var.name)
                if value is None and isinstance(var, InputGraphNode):
                    if var.filename is not None and var.format is not None:
                        path = os.path.join(self.data_dir, var.filename)
                        value = load_dataset(path) if var.format == DataFormat.DATASET else load_dataframe(path)
                    elif var.default is not None:
                        value = var.default
                    if value is not None:
                        self.state[var.name] = value
                if value is None:
                    raise KeyError(f"cannot get variable {var.name}")
                out.append(value)
            return out


        def upload(self, name, data):
            self.uploads[name] = data

        def clear(self):
            self.state.clear()

    class AggregatorContext(_State, ServerContext):
        def __init__(self):
            self.state: dict = {}
            self.gathered: dict = {}
            self.clients = 0

        def get(self, *variables):
            out = []
            for var in variables:
                value = self.state.get(var.name)
                if value is None and isinstance(var, InputGraphNode) and var.default is not None:
                    value = self.state[var.name] = var.default
                if value is None:
                    raise KeyError(f"cannot get variable {var.name}")
                out.append(value)
            return out


        def gather(self, name):
            return self.gathered[name], self.clients

        def clear(self):
            self.state.clear()

    return NodeClientContext, AggregatorContext


def _server_inputs(step) -> list:
    """The server-side variables a step's map side reads (sent down to every client)."""
    from delta.core.task import DataLocation
    seen = {}
    for group in step.map_ops:
        for op in group.ops:
            for var in op.inputs:
                seen[var.name] = var
    for group in step.map_reduce_ops:
        for op in group.ops:
            for var in op.map_inputs:
                seen[var.name] = var
    return [v for v in seen.values() if v.location == DataLocation.SERVER]


def _sum(uploads: list[dict], precision: int) -> dict:
    """delta-task's aggregation: each uploaded value summed over the clients (masked values are
    summed first and only the sum is unmasked)."""
    total = {}
    for upload in uploads:
        for name, values in upload.items():
            into = total.setdefault(name, {})
            for key, value in values.items():
                into[key] = value if key not in into else into[key] + value
    return {name: {key: v.unmask(precision) if isinstance(v, secagg.Masked) else v for key, v in values.items()}
            for name, values in total.items()}


def _masked(uploads: dict, step: int, me: int, peers: dict[int, bytes], precision: int) -> dict:
    return {name: {key: secagg.mask(v, me, peers, f"{step}/{name}/{key}", precision) for key, v in values.items()}
            for name, values in uploads.items()}


def _log_metrics(ctx, new_vars: dict) -> None:
    """New server variables that are dicts of numbers (a learning task's validation metrics)."""
    for name, value in sorted(new_vars.items()):
        if isinstance(value, dict) and value and all(isinstance(v, (int, float)) for v in value.values()):
            ctx.log(f"[Metrics] {name}: " + ", ".join(f"{k}={v:.6g}" for k, v in value.items()))


def coordinate(ctx, task: str, kind: str = "analytics") -> str:
    from delta.core.task import EarlyStop
    ctx.log(f"start run task {ctx.task_id}")
    ctx.log(f"[Create Task] create task {ctx.task_id}")
    dtask = _load_task(task)
    link = Link(ctx)
    nodes = list(_call(link.stub.StartDeltaClients, pb.StartDeltaClientsRequest(task_uid=ctx.uid)).nodes)
    ctx.log(f"[Select] {len(nodes)} clients on nodes holding {', '.join(dtask.dataset)}: {', '.join(nodes)}")
    _, AggregatorContext = _contexts()
    server = AggregatorContext()
    server.clients = len(nodes)
    precision = int(getattr(dtask.strategy, "precision", 8))
    # Pairwise masks whenever there is more than one client: the keys are relayed, never made here.
    public_keys = [link.receive(f"key/{i}") for i in range(len(nodes))]
    if len(nodes) > 1:
        ctx.log(f"[Secure Aggregation] pairwise masks among {len(nodes)} clients (precision {precision})")
    steps = len(dtask.steps)
    done = steps
    for s, step in enumerate(dtask.steps):
        variables = {v.name: server.get(v)[0] for v in _server_inputs(step)}
        for i in range(len(nodes)):
            link.send(f"down/{s}/{i}", {"vars": variables, "keys": public_keys if s == 0 else None,
                                        "precision": precision})
        ctx.log(f"[Map] round {s + 1}/{steps}: sent to {len(nodes)} clients")
        uploads = [link.receive(f"up/{s}/{i}") for i in range(len(nodes))]
        server.gathered = _sum(uploads, precision)
        ctx.log(f"[Reduce] round {s + 1}/{steps}: aggregated {', '.join(server.gathered) or 'nothing'}"
                f" from {len(nodes)} clients")
        ctx.progress(100 * (s + 1) // steps)
        before = set(server.state)
        try:
            step.reduce(server)
        except EarlyStop:
            done = s + 1
            ctx.log(f"[Reduce] early stop after round {s + 1}")
            break
        _log_metrics(ctx, {k: v for k, v in server.state.items() if k not in before})
    for i in range(len(nodes)):
        link.send(f"down/{done}/{i}", {"stop": True})
    for i in range(len(nodes)):  # every client has its stop: none is cut off when this task ends
        link.receive(f"bye/{i}")
    outputs = server.get(*dtask.outputs)
    result = outputs[0] if len(outputs) == 1 else tuple(outputs)
    ctx.log(f"task {ctx.task_id} finish")
    return base64.b64encode(pickle.dumps(result)).decode()


def client(ctx, task: str, index: int) -> str:
    dtask = _load_task(task)
    data_dir = os.environ.get("TASKHUB_DATA_DIR", "")
    if not data_dir:
        raise DeltaRunError("this node has no data directory (TASKHUB_DATA_DIR)")
    ctx.log(f"client {index}: datasets {', '.join(dtask.dataset)} from {data_dir}")
    NodeClientContext, _ = _contexts()
    local = NodeClientContext(data_dir)
    link = Link(ctx)
    private, public = secagg.keypair()
    link.send(f"key/{index}", public)
    peers: dict[int, bytes] = {}
    s = 0
    while True:
        message = link.receive(f"down/{s}/{index}")
        if message.get("stop"):
            link.send(f"bye/{index}", True)
            break
        if message.get("keys"):
            peers = {j: secagg.shared_secret(private, key) for j, key in enumerate(message["keys"]) if j != index}
        local.server_vars, local.uploads = message["vars"], {}
        dtask.steps[s].map(local)
        uploads = _masked(local.uploads, s, index, peers, message["precision"]) if peers else local.uploads
        link.send(f"up/{s}/{index}", uploads)
        ctx.log(f"[Map] round {s + 1}: uploaded {', '.join(local.uploads) or 'nothing'}")
        s += 1
    ctx.log(f"client {index} finish")
    return f"{s} rounds"
