"""TaskGroupService: proto in, TaskGroups call, proto out."""
from __future__ import annotations

import json

from google.protobuf import empty_pb2
from taskhub.v1 import task_group_service_pb2 as pb
from taskhub.v1 import task_group_service_pb2_grpc as svc_grpc

from .. import errors
from ..groups import COMPLETED, FAILED, Instance, Template, TaskGroups
from .errors import mapped

_STATUS = {COMPLETED: pb.INSTANCE_STATUS_COMPLETED, FAILED: pb.INSTANCE_STATUS_FAILED}


def template_to_proto(t: Template) -> pb.TaskGroupTemplate:
    groups = [pb.TaskGroup(tasks=[pb.GroupTask(name=n, config=pb.GroupTaskConfig(command=c)) for n, c in g])
              for g in t.groups]
    return pb.TaskGroupTemplate(name=t.name, task_groups=groups, json=t.json, create_time_ms=t.create_time_ms)


def template_to_json(m: pb.TaskGroupTemplate) -> str:
    """A template given as a message, as the JSON document it stands for."""
    doc = {"name": m.name, "task_groups": [
        {"tasks": [{"name": t.name, "config": {"command": t.config.command}} for t in g.tasks]}
        for g in m.task_groups]}
    return json.dumps(doc, ensure_ascii=False)


class TaskGroupService(svc_grpc.TaskGroupServiceServicer):
    def __init__(self, groups: TaskGroups):
        self.groups = groups

    def _instance(self, i: Instance) -> pb.TaskGroupInstance:
        return pb.TaskGroupInstance(id=i.id, template=i.template, namespace=i.namespace, task_ids=i.task_ids,
                                    create_time_ms=i.create_time_ms,
                                    status=_STATUS.get(self.groups.status(i), pb.INSTANCE_STATUS_RUNNING))

    @mapped
    async def CreateTemplate(self, request, context):
        if request.json:
            text = request.json
        elif request.HasField("template"):
            text = template_to_json(request.template)
        else:
            raise errors.InvalidArgument("give the template as `json` or as `template`")
        return template_to_proto(await self.groups.create_template(text))

    @mapped
    async def GetTemplate(self, request, context):
        return template_to_proto(self.groups.get_template(request.name))

    @mapped
    async def ListTemplates(self, request, context):
        return pb.ListTemplatesResponse(templates=[template_to_proto(t) for t in self.groups.list_templates()])

    @mapped
    async def DeleteTemplate(self, request, context):
        await self.groups.delete_template(request.name)
        return empty_pb2.Empty()

    @mapped
    async def Deploy(self, request, context):
        return self._instance(await self.groups.deploy(request.name, request.namespace))

    @mapped
    async def GetInstance(self, request, context):
        return self._instance(self.groups.get_instance(request.id))

    @mapped
    async def ListInstances(self, request, context):
        return pb.ListInstancesResponse(instances=[self._instance(i) for i in self.groups.list_instances(request.template)])

    @mapped
    async def StopInstance(self, request, context):
        inst, cancelled = await self.groups.stop(request.id)
        return pb.StopInstanceResponse(id=inst.id, cancelled_task_ids=cancelled)
