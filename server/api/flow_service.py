"""FlowService: proto in, FATE job domain (server/flow/) call, proto out."""
from __future__ import annotations

import asyncio
import json

from google.protobuf import empty_pb2
from taskhub.v1 import flow_service_pb2 as pb
from taskhub.v1 import flow_service_pb2_grpc as pb_grpc

from .. import errors
from ..flow.data import FlowData
from ..flow.federation import Federation
from ..flow.jobs import FlowJobs
from ..flow.model import FlowJob, FlowTask, JobStatus
from ..flow.tables import aiter_lines
from .errors import mapped
from .flow_models_service import FlowModelMethods


def upload_limit_message(limit: int, what: str) -> str:
    return (f"{what} is larger than this server's upload limit of {limit / (1 << 20):g} MiB"
            " (taskhub serve --max-upload-mb)")


def job_to_proto(job: FlowJob, queue_position: int = 0) -> pb.FlowJob:
    return pb.FlowJob(
        job_id=job.job_id, status=int(job.status), progress=job.progress, dsl_json=job.dsl_json,
        conf_json=job.conf_json, initiator=pb.FlowParty(role=job.initiator[0], party_id=job.initiator[1]),
        parties=[pb.FlowParty(role=r, party_id=p) for r, p in job.parties], job_type=job.job_type,
        model_id=job.model_id, model_version=job.model_version, namespace=job.namespace, error=job.error,
        timeout_seconds=job.timeout_seconds, queue_position=queue_position, create_time_ms=job.create_time_ms,
        start_time_ms=job.start_time_ms, end_time_ms=job.end_time_ms, update_time_ms=job.update_time_ms,
        description=job.description)


def task_to_proto(t: FlowTask) -> pb.FlowTask:
    return pb.FlowTask(
        job_id=t.job_id, component_name=t.component, module=t.module, task_id=t.task_id,
        task_version=t.task_version, party=pb.FlowParty(role=t.role, party_id=t.party_id), status=int(t.status),
        taskhub_task_id=t.taskhub_task_id, run_pid=t.run_pid, node=t.node, error=t.error,
        create_time_ms=t.create_time_ms, start_time_ms=t.start_time_ms, end_time_ms=t.end_time_ms, retries=t.retries)


def table_to_proto(info: dict | None, namespace: str = "", name: str = "") -> pb.TableInfo:
    if info is None:
        return pb.TableInfo(namespace=namespace, name=name, exist=False)
    return pb.TableInfo(
        namespace=info["namespace"], name=info["name"], exist=True, count=info["count"],
        partitions=info["partitions"], schema_json=info["schema_json"], create_time_ms=info["create_time_ms"],
        job_id=info["job_id"], component_name=info["component"], role=info["role"], party_id=info["party_id"],
        output_name=info["output_name"])


class FlowService(FlowModelMethods, pb_grpc.FlowServiceServicer):
    def __init__(self, jobs: FlowJobs, data: FlowData, federation: Federation, models=None,
                 max_upload: int = 1 << 30):
        self.jobs = jobs
        self.max_upload = max_upload   # bytes of one streamed upload (--max-upload-mb)
        self.models = models
        self.data = data
        self.federation = federation

    def _job(self, job: FlowJob) -> pb.FlowJob:
        return job_to_proto(job, self.jobs.queue_position(job.job_id))

    # ---------------------------------------------------------------- jobs
    @mapped
    async def SubmitJob(self, request, context):
        return self._job(await self.jobs.submit(request.dsl_json, request.conf_json, request.namespace))

    @mapped
    async def GetJob(self, request, context):
        return self._job(self.jobs.get(request.job_id))

    @mapped
    async def ListJobs(self, request, context):
        party = (request.party.role, request.party.party_id) if request.HasField("party") and request.party.role else None
        jobs, total = self.jobs.list_jobs(request.job_id, party, [int(s) for s in request.statuses],
                                          request.job_type, request.limit, request.page)
        return pb.ListJobsResponse(jobs=[self._job(j) for j in jobs], total=total)

    @mapped
    async def StopJob(self, request, context):
        status = JobStatus(request.status) if request.status else JobStatus.CANCELED
        return self._job(await self.jobs.stop(request.job_id, status, request.reason))

    @mapped
    async def WatchJob(self, request, context):
        async for job, task in self.jobs.watch(request.job_id):
            if task is None:
                yield pb.WatchJobResponse(job=self._job(job))
            else:
                yield pb.WatchJobResponse(task=task_to_proto(task))

    @mapped
    async def TraceJob(self, request, context):
        follow = request.follow if request.HasField("follow") else True
        async for t, batch in self.jobs.trace(request.job_id, request.component_name, request.role,
                                              request.party_id, follow):
            resp = pb.TraceJobResponse()
            for seq, ts, stream, text in batch:
                line = resp.lines.add(component_name=t.component, role=t.role, party_id=t.party_id,
                                      taskhub_task_id=t.taskhub_task_id)
                line.line.seq, line.line.time_ms, line.line.stream, line.line.text = seq, ts, stream, text
            yield resp
        final = self.jobs.get(request.job_id)
        yield pb.TraceJobResponse(end=final.terminal, status=int(final.status))

    @mapped
    async def RerunJob(self, request, context):
        job, components = await self.jobs.rerun(request.job_id, request.component_name, request.force)
        return pb.RerunJobResponse(job=self._job(job), component_names=components)

    @mapped
    async def CleanJob(self, request, context):
        tasks, tables, metrics = await self.jobs.clean(request.job_id, request.role, request.party_id,
                                                       request.component_name)
        return pb.CleanJobResponse(tasks=tasks, tables=tables, metrics=metrics)

    @mapped
    async def CleanQueue(self, request, context):
        return pb.CleanQueueResponse(job_ids=await self.jobs.clean_queue())

    @mapped
    async def ListFlowTasks(self, request, context):
        tasks, total = self.jobs.list_tasks(request.job_id, request.role, request.party_id, request.component_name,
                                            [int(s) for s in request.statuses], request.limit, request.page)
        return pb.ListFlowTasksResponse(tasks=[task_to_proto(t) for t in tasks], total=total)

    # ---------------------------------------------------------------- tracking
    @mapped
    async def ListComponents(self, request, context):
        job = self.jobs.get(request.job_id)
        plan = self.jobs.plan(job)
        if plan is None:
            names = sorted({c for c, _, _ in job.tasks})
            return pb.ListComponentsResponse(components=[
                pb.FlowComponent(name=n, module=next(t.module for t in job.tasks.values() if t.component == n),
                                 status=int(self.jobs.component_status(job, n))) for n in names])
        return pb.ListComponentsResponse(components=[
            pb.FlowComponent(name=c.name, module=c.module, upstream=c.upstream,
                             status=int(self.jobs.component_status(job, c.name))) for c in plan.components])

    @mapped
    async def GetComponentOutput(self, request, context):
        t, outs = self.data.component_output(request.job_id, request.component_name, request.role, request.party_id)
        return pb.ComponentOutput(
            task=task_to_proto(t), parameters_json=outs.get("parameters_json") or "{}",
            metrics=[pb.FlowMetric(**m) for m in outs["metrics"]], summary_json=outs.get("summary_json") or "{}",
            model_json=outs.get("model_json") or "", model_meta_json=outs.get("model_meta_json") or "",
            output_tables=[table_to_proto(i) for i in outs["tables"]])

    @mapped
    async def DeleteMetrics(self, request, context):
        return pb.DeleteMetricsResponse(deleted=await self.data.delete_metrics(request.date, request.job_id))

    # ---------------------------------------------------------------- tables
    @mapped
    async def UploadData(self, request_iterator, context):
        first = await request_iterator.__anext__() if hasattr(request_iterator, "__anext__") else None
        if first is None or first.WhichOneof("part") != "conf_json":
            raise errors.InvalidArgument("the first UploadData message must carry conf_json")
        try:
            conf = json.loads(first.conf_json)
        except ValueError as e:
            raise errors.InvalidArgument(f"conf_json is not valid JSON: {e}") from None
        if not isinstance(conf, dict):
            raise errors.InvalidArgument("conf_json must be a JSON object")
        server_file = str(conf.get("use_local_data", 1)) == "0"

        async def chunks():
            size = 0
            async for msg in request_iterator:
                if msg.WhichOneof("part") != "chunk":
                    raise errors.InvalidArgument("after the conf, UploadData messages carry file chunks only")
                size += len(msg.chunk)
                if size > self.max_upload:
                    raise errors.ResourceExhausted(upload_limit_message(self.max_upload, "the file"))
                yield msg.chunk

        return self._job(await self.data.upload(conf, None if server_file else chunks()))

    @mapped
    async def DownloadData(self, request, context):
        return self._job(await self.data.download(request.namespace, request.table_name, request.output_path,
                                                  request.delimiter))

    @mapped
    async def UploadHistory(self, request, context):
        if request.limit < 0:
            raise errors.InvalidArgument("limit must not be negative")
        return pb.UploadHistoryResponse(uploads=[
            pb.UploadRecord(job_id=rec["job_id"], table=table_to_proto(info, rec["namespace"], rec["name"]),
                            conf_json=rec["conf_json"], status=int(status), upload_count=rec["upload_count"])
            for rec, info, status in self.data.upload_history(request.limit, request.job_id)])

    @mapped
    async def GetTable(self, request, context):
        return table_to_proto(self.data.get_table(request.namespace, request.name), request.namespace, request.name)

    @mapped
    async def DeleteTable(self, request, context):
        found = await self.data.delete_table(request.namespace, request.name, request.job_id, request.component_name,
                                             request.role, request.party_id)
        return pb.DeleteTableResponse(tables=[table_to_proto(i) for i in found])

    @mapped
    async def ReadTable(self, request, context):
        info, batches = self.data.read(request.namespace, request.name, request.limit)
        yield pb.ReadTableResponse(table=table_to_proto(info))
        async for lines in aiter_lines(batches, asyncio.get_running_loop()):
            yield pb.ReadTableResponse(lines=lines)

    # ---------------------------------------------------------------- component tasks
    @mapped
    async def WriteTable(self, request_iterator, context):
        first = await request_iterator.__anext__()

        async def batches():
            if first.lines:
                yield list(first.lines)
            async for msg in request_iterator:
                yield list(msg.lines)

        info = await self.data.write_output(first.task_uid, first.output_name, first.schema_json, batches())
        return table_to_proto(info)

    @mapped
    async def PutTracking(self, request, context):
        self.data.put_tracking(request.task_uid,
                               [(m.namespace, m.name, m.data_json, m.meta_json) for m in request.metrics],
                               request.summary_json, request.model_json, request.model_meta_json)
        return empty_pb2.Empty()

    @mapped
    async def FederationSend(self, request, context):
        await self.federation.send(request.task_uid, request.name, request.tag, request.dst_role,
                                   request.dst_party_id, request.payload)
        return empty_pb2.Empty()

    @mapped
    async def FederationReceive(self, request, context):
        payload = await self.federation.receive(request.task_uid, request.name, request.tag, request.src_role,
                                                request.src_party_id, request.timeout_seconds)
        return pb.FederationReceiveResponse(payload=payload)

