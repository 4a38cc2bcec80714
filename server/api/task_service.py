"""TaskService: proto in, engine call, proto out."""
from __future__ import annotations

from google.protobuf import empty_pb2, json_format
from taskhub.v1 import task_service_pb2 as svc
from taskhub.v1 import task_service_pb2_grpc as svc_grpc

from .. import errors
from ..auth import CALL_CREATOR, CREATOR_ANNOTATION
from ..engine import Engine
from ..model import TaskSpec
from ..modules import ModuleDescriber
from .convert import add_lines, created_to_proto, spec_from_proto, task_to_proto, tasks_to_proto
from .errors import mapped

MAX_WAIT_IDS = 100_000


class TaskService(svc_grpc.TaskServiceServicer):
    def __init__(self, engine: Engine, describer: ModuleDescriber | None = None):
        self.engine = engine
        self.describer = describer or ModuleDescriber(engine.config.allowed_modules, [])

    @mapped
    async def CreateTask(self, request, context):
        specs, stamp = _stamped([request.spec])
        [task] = await self.engine.create(specs, request.request_id)
        return created_to_proto([task], [request.spec], stamp)[0]

    @mapped
    async def RunTask(self, request, context):
        [task] = await self.engine.create(_stamped([request.spec])[0], request.request_id)
        # The task as it is once committed, then each later change. A node usually took it in the
        # create already: a short task is two messages (RUNNING, its end), not three with NEW.
        async for snap in self.engine.watch(task):
            yield task_to_proto(snap)

    @mapped
    async def ExecuteTask(self, request, context):
        [task] = await self.engine.create(_stamped([request.spec])[0], request.request_id, until_end=True)
        return task_to_proto(await self.engine.ended(task))

    @mapped
    async def CreateTasks(self, request, context):
        specs, stamp = _stamped(request.specs)
        tasks = await self.engine.create(specs, request.request_id)
        return svc.CreateTasksResponse(tasks=created_to_proto(tasks, request.specs, stamp))

    @mapped
    async def GetTask(self, request, context):
        if not request.id and not request.uid:
            raise errors.InvalidArgument("give a task id or uid")
        return task_to_proto(self.engine.get(request.namespace, request.id, request.uid))

    @mapped
    async def ListTasks(self, request, context):
        tasks, token = await self.engine.list(request.namespace, list(request.statuses), request.limit,
                                              request.page_token, request.name_contains)
        return svc.ListTasksResponse(tasks=tasks_to_proto(tasks), next_page_token=token)

    @mapped
    async def CancelTask(self, request, context):
        cancelled, task = await self.engine.cancel_anywhere(request.namespace, request.id, request.reason)
        return svc.CancelTaskResponse(cancelled=cancelled, task=task_to_proto(task))

    @mapped
    async def DeleteTask(self, request, context):
        await self.engine.delete(request.namespace, request.id, request.force)
        return empty_pb2.Empty()

    @mapped
    async def TraceTask(self, request, context):
        if request.offset < 0:
            raise errors.InvalidArgument("offset must not be negative")
        task = self.engine.get(request.namespace, request.id)
        follow = request.follow if request.HasField("follow") else True
        async for batch in self.engine.trace(task, request.offset, follow):
            resp = svc.TraceTaskResponse()
            add_lines(resp.lines, batch)
            yield resp
        final = self.engine.get("*", task.id)
        yield svc.TraceTaskResponse(end=final.terminal, status=int(final.status))

    @mapped
    async def WaitTask(self, request, context):
        task = self.engine.get(request.namespace, request.id)
        async for snap in self.engine.watch(task):
            yield task_to_proto(snap)

    @mapped
    async def WaitTasks(self, request, context):
        if len(request.ids) > MAX_WAIT_IDS:
            raise errors.InvalidArgument(f"at most {MAX_WAIT_IDS} ids per call")
        async for batch in self.engine.wait_all(request.namespace, list(request.ids)):
            yield svc.WaitTasksResponse(tasks=tasks_to_proto(batch))

    @mapped
    async def WatchTasks(self, request, context):
        async for changed, deleted, overflowed in self.engine.watch_all(request.namespace):
            yield svc.WatchTasksResponse(tasks=tasks_to_proto(changed), deleted_ids=deleted,
                                         overflow=overflowed)

    @mapped
    async def DescribeModule(self, request, context):
        description = await self.describer.describe(request.module)
        return json_format.ParseDict(description, svc.DescribeModuleResponse())


def _stamped(messages) -> tuple[list[TaskSpec], tuple[str, str] | None]:
    """The domain's specs of a create, and the annotation the server adds to each: the creating
    token, when auth is on (auth.CALL_CREATOR).

    A spec repeated back to back (a fan-out of one task, as `[spec] * n`) becomes one TaskSpec that
    those tasks share; a spec never changes once its task exists. Its conversion, its check, its
    row's JSON and its message in every answer are then made once per run of equal specs, not once
    per task (see tasks_to_proto); comparing two messages costs a tenth of converting one."""
    specs, distinct = [], []
    for m in messages:
        if not distinct or m != last:
            last = m
            distinct.append(spec_from_proto(m))
        specs.append(distinct[-1])
    creator = CALL_CREATOR.get()
    if not creator:
        return specs, None
    for spec in distinct:
        spec.annotations[CREATOR_ANNOTATION] = creator
    return specs, (CREATOR_ANNOTATION, creator)
