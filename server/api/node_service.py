"""NodeService: the agents' stream and the operator's node calls, over the NodeRegistry."""
from __future__ import annotations

from taskhub.v1 import node_service_pb2 as pb
from taskhub.v1 import node_service_pb2_grpc as svc_grpc

from .. import errors
from ..node.base import Node
from ..node.remote import NodeRegistry, RemoteNode
from .errors import mapped


def node_to_proto(n: Node) -> pb.NodeInfo:
    return pb.NodeInfo(
        name=n.name, address=n.address, state=pb.NODE_STATE_ONLINE if n.online else pb.NODE_STATE_OFFLINE,
        draining=n.draining, local=not isinstance(n, RemoteNode), slots=n.slots, free_slots=n.free_slots,
        labels=n.labels, cpu_count=n.cpu_count, memory_mb=n.memory_mb, cpu_percent=n.cpu_percent,
        memory_percent=n.memory_percent, last_heartbeat_ms=n.last_heartbeat_ms, task_ids=sorted(n.assigned),
        usage_history=[pb.UsageSample(time_ms=t, cpu_percent=c, memory_percent=m) for t, c, m in n.usage],
    )


async def _after(first, rest):
    yield first
    async for msg in rest:
        yield msg


class NodeService(svc_grpc.NodeServiceServicer):
    def __init__(self, registry: NodeRegistry, cluster=None):
        self.registry = registry
        self.cluster = cluster  # agents and node calls are the scheduler's: a follower says where it is

    def _scheduler_only(self) -> None:
        if self.cluster is not None:
            self.cluster.require_scheduler()

    @mapped
    async def Connect(self, request_iterator, context):
        # Read the registration before a follower refuses: ending the stream while the agent's first
        # write is in flight makes grpc.aio report INTERNAL instead of our status and its leader hint
        # (grpc/grpc#36066).
        messages = request_iterator.__aiter__()
        first = await anext(messages, None)
        self._scheduler_only()
        if first is None:
            return
        async for msg in self.registry.connect(_after(first, messages), context.peer()):
            yield msg

    @mapped
    async def ListNodes(self, request, context):
        self._scheduler_only()
        return pb.ListNodesResponse(nodes=[node_to_proto(n) for n in self.registry.list()])

    @mapped
    async def GetNode(self, request, context):
        self._scheduler_only()
        if not request.name:
            raise errors.InvalidArgument("give a node name")
        return node_to_proto(self.registry.get(request.name))

    @mapped
    async def DrainNode(self, request, context):
        self._scheduler_only()
        if not request.name:
            raise errors.InvalidArgument("give a node name")
        return node_to_proto(self.registry.drain(request.name, request.resume))
