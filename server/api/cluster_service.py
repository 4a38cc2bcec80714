"""ClusterService: the servers on this database and which one schedules, over server/cluster.py."""
from __future__ import annotations

import asyncio

from taskhub.v1 import cluster_pb2 as pb
from taskhub.v1 import cluster_pb2_grpc as svc_grpc

from ..cluster import Cluster
from .errors import mapped


class ClusterService(svc_grpc.ClusterServiceServicer):
    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    @mapped
    async def ListServers(self, request, context):
        rows, scheduler, epoch, since = await asyncio.get_running_loop().run_in_executor(None, self.cluster.servers)
        return pb.ListServersResponse(
            servers=[pb.ServerInfo(name=r.name, address=r.address, started_ms=r.started_ms,
                                   heartbeat_ms=r.heartbeat_ms, alive=r.alive, scheduler=r.scheduler) for r in rows],
            scheduler=scheduler, epoch=epoch, scheduler_since_ms=since, answered_by=self.cluster.name)
