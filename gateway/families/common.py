"""What every family adapter needs from the gRPC side: the server's stubs, kept on the app.

Handlers are module-level functions listed in their family's ROUTES table (data: method, path,
handler); each finds the stubs on its request (`stubs(request).flow`), so a handler can be
imported and called on its own with any app that holds a Stubs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web
from taskhub.v1 import delta_service_pb2_grpc as delta_grpc
from taskhub.v1 import flow_service_pb2_grpc as flow_grpc
from taskhub.v1 import node_service_pb2_grpc as node_grpc
from taskhub.v1 import task_group_service_pb2_grpc as group_grpc
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2_grpc as svc_grpc

TIMEOUT = 60.0
TERMINAL = frozenset({pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_CANCELLED, pb.TASK_STATUS_FAILED})


@dataclass(frozen=True)
class Stubs:
    """The server's services on the gateway's one channel."""
    tasks: svc_grpc.TaskServiceStub
    flow: flow_grpc.FlowServiceStub
    delta: delta_grpc.DeltaServiceStub
    groups: group_grpc.TaskGroupServiceStub
    nodes: node_grpc.NodeServiceStub

    @classmethod
    def on(cls, channel) -> "Stubs":
        return cls(svc_grpc.TaskServiceStub(channel), flow_grpc.FlowServiceStub(channel),
                   delta_grpc.DeltaServiceStub(channel), group_grpc.TaskGroupServiceStub(channel),
                   node_grpc.NodeServiceStub(channel))


STUBS = web.AppKey("taskhub.stubs", Stubs)


def stubs(request: web.Request) -> Stubs:
    return request.app[STUBS]


def status_name(status: int) -> str:
    """TASK_STATUS_RUNNING -> 'RUNNING'."""
    return pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_")


def task_input(spec: pb.TaskSpec) -> str:
    """The task's input as JSON text: a Python task's input, a command's argv."""
    if spec.type == pb.TASK_TYPE_COMMAND:
        return json.dumps(list(spec.argv), ensure_ascii=False)
    return spec.input_json or "{}"
