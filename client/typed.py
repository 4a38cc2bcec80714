"""TaskhubClient's typed sub-clients, one per service beside TaskService: `nodes`, `groups`,
`auth`, `delta` and `flow`. Each is its service's generated stub (so `c.nodes.ListNodes(req)`
still works) plus one snake_case method per RPC that takes plain arguments and passes the
client's timeout. tests/test_client_completeness.py checks that no RPC is left without one.
"""
from __future__ import annotations

import json
from typing import Iterable, Iterator

from taskhub.v1 import auth_service_pb2 as apb
from taskhub.v1 import auth_service_pb2_grpc as auth_grpc
from taskhub.v1 import cluster_pb2 as cpb
from taskhub.v1 import cluster_pb2_grpc as cluster_grpc
from taskhub.v1 import delta_service_pb2 as dpb
from taskhub.v1 import delta_service_pb2_grpc as delta_grpc
from taskhub.v1 import flow_service_pb2 as fpb
from taskhub.v1 import flow_service_pb2_grpc as flow_grpc
from taskhub.v1 import node_service_pb2 as npb
from taskhub.v1 import node_service_pb2_grpc as node_grpc
from taskhub.v1 import task_group_service_pb2 as gpb
from taskhub.v1 import task_group_service_pb2_grpc as group_grpc
from taskhub.v1 import task_pb2 as pb


class _Typed:
    def __init__(self, channel, timeout: float | None):
        super().__init__(channel)
        self.timeout = timeout


class Nodes(_Typed, node_grpc.NodeServiceStub):
    def list_nodes(self) -> list[npb.NodeInfo]:
        return list(self.ListNodes(npb.ListNodesRequest(), timeout=self.timeout).nodes)

    def get_node(self, name: str) -> npb.NodeInfo:
        return self.GetNode(npb.GetNodeRequest(name=name), timeout=self.timeout)

    def drain_node(self, name: str, resume: bool = False) -> npb.NodeInfo:
        """Place no new tasks on the node (running ones finish); resume=True accepts them again."""
        return self.DrainNode(npb.DrainNodeRequest(name=name, resume=resume), timeout=self.timeout)


class Cluster(_Typed, cluster_grpc.ClusterServiceStub):
    """The servers sharing the database and which one schedules (`taskhub cluster`)."""

    def list_servers(self) -> cpb.ListServersResponse:
        return self.ListServers(cpb.ListServersRequest(), timeout=self.timeout)


class Groups(_Typed, group_grpc.TaskGroupServiceStub):
    """Task-group templates and their deployed instances (seed 003)."""

    def create_template(self, template: dict | str) -> gpb.TaskGroupTemplate:
        text = template if isinstance(template, str) else json.dumps(template, ensure_ascii=False)
        return self.CreateTemplate(gpb.CreateTemplateRequest(json=text), timeout=self.timeout)

    def get_template(self, name: str) -> gpb.TaskGroupTemplate:
        return self.GetTemplate(gpb.GetTemplateRequest(name=name), timeout=self.timeout)

    def list_templates(self) -> list[gpb.TaskGroupTemplate]:
        return list(self.ListTemplates(gpb.ListTemplatesRequest(), timeout=self.timeout).templates)

    def delete_template(self, name: str) -> None:
        self.DeleteTemplate(gpb.DeleteTemplateRequest(name=name), timeout=self.timeout)

    def deploy(self, name: str, namespace: str = "") -> gpb.TaskGroupInstance:
        return self.Deploy(gpb.DeployRequest(name=name, namespace=namespace), timeout=self.timeout)

    def get_instance(self, instance_id: str) -> gpb.TaskGroupInstance:
        return self.GetInstance(gpb.GetInstanceRequest(id=instance_id), timeout=self.timeout)

    def list_instances(self, template: str = "") -> list[gpb.TaskGroupInstance]:
        return list(self.ListInstances(gpb.ListInstancesRequest(template=template), timeout=self.timeout).instances)

    def stop_instance(self, instance_id: str) -> gpb.StopInstanceResponse:
        return self.StopInstance(gpb.StopInstanceRequest(id=instance_id), timeout=self.timeout)


class Auth(_Typed, auth_grpc.AuthServiceStub):
    """Tokens and the audit (admin), and who the caller is."""

    def create_token(self, name: str, role: str, namespaces: Iterable[str] = (),
                     ttl_seconds: int = 0) -> apb.CreateTokenResponse:
        return self.CreateToken(apb.CreateTokenRequest(name=name, role=role, namespaces=list(namespaces),
                                                       ttl_seconds=ttl_seconds), timeout=self.timeout)

    def list_tokens(self) -> list[apb.TokenInfo]:
        return list(self.ListTokens(apb.ListTokensRequest(), timeout=self.timeout).tokens)

    def revoke_token(self, id_or_name: str) -> apb.TokenInfo:
        return self.RevokeToken(apb.RevokeTokenRequest(id=id_or_name), timeout=self.timeout)

    def who_am_i(self) -> apb.TokenInfo:
        return self.WhoAmI(apb.WhoAmIRequest(), timeout=self.timeout)

    def list_audit(self, limit: int = 100, token_id: str = "") -> list[apb.AuditEntry]:
        return list(self.ListAudit(apb.ListAuditRequest(limit=limit, token_id=token_id), timeout=self.timeout).entries)


class Delta(_Typed, delta_grpc.DeltaServiceStub):
    def create_delta_task(self, task: bytes, namespace: str = "") -> pb.Task:
        """A task built with delta-task (`delta.serialize.dump_task` bytes); needs --allow-delta."""
        return self.CreateDeltaTask(dpb.CreateDeltaTaskRequest(task=task, namespace=namespace), timeout=self.timeout)


class Flow(_Typed, flow_grpc.FlowServiceStub):
    """FlowService calls with taskhub's shapes (FATE-shaped ones: client.flow.FlowClient)."""

    def submit_job(self, dsl: dict, conf: dict) -> fpb.FlowJob:
        return self.SubmitJob(fpb.SubmitJobRequest(dsl_json=json.dumps(dsl), conf_json=json.dumps(conf)),
                              timeout=self.timeout)

    def watch_job(self, job_id: str) -> Iterator[fpb.WatchJobResponse]:
        """The job and each of its tasks now, then at every status change, until the job ends."""
        return self.WatchJob(fpb.WatchJobRequest(job_id=job_id))

    def delete_model(self, model_id: str, model_version: str) -> fpb.DeleteModelResponse:
        return self.DeleteModel(fpb.ModelRef(model_id=model_id, model_version=model_version), timeout=self.timeout)

    def generate_dsl(self, train_dsl: dict, components: Iterable[str]) -> dict:
        """A predict DSL from a train DSL and the components to keep."""
        found = self.GenerateDsl(fpb.GenerateDslRequest(train_dsl_json=json.dumps(train_dsl),
                                                        cpn_list=list(components)), timeout=self.timeout)
        return json.loads(found.dsl_json)
