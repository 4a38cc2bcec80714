"""What every family adapter needs from the gRPC side."""
from __future__ import annotations

import json

from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2_grpc as svc_grpc

TIMEOUT = 60.0
TERMINAL = frozenset({pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_CANCELLED, pb.TASK_STATUS_FAILED})


def stub(channel) -> svc_grpc.TaskServiceStub:
    return svc_grpc.TaskServiceStub(channel)


def status_name(status: int) -> str:
    """TASK_STATUS_RUNNING -> 'RUNNING'."""
    return pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_")


def task_input(spec: pb.TaskSpec) -> str:
    """The task's input as JSON text: a Python task's input, a command's argv."""
    if spec.type == pb.TASK_TYPE_COMMAND:
        return json.dumps(list(spec.argv), ensure_ascii=False)
    return spec.input_json or "{}"
