"""This server's FATE party among the others: what FlowJobs and the Federation need of the other
parties' servers (jobs.SiteLink, Federation.forward), and what they ask of this one (the
SiteService calls, each checked against the calling party's place in the job it names).

The initiator's server offers the job to every other party's server, starts their tasks when
what those read is done (StartComponents), and hears each status change back (ReportTask); when
the job ends there, it ends everywhere (EndJob), with the reason. Calls to one party go in order
and are resent until acknowledged (peers.Peers); a party silent longer than the party timeout
fails the job with a reason naming it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from taskhub.v1 import site_service_pb2 as pb

from .. import errors
from ..background import spawn
from ..flow import dsl
from ..flow.federation import Federation
from ..flow.jobs import REMOTE_NODE, FlowJobs
from ..flow.models import FlowModels
from ..flow.model import FlowJob, FlowTask, JobStatus, job_status_of, task_status_of
from .outbox import Outbox
from .peers import Peers
from .routes import RouteTable

log = logging.getLogger("taskhub.sites")
J = JobStatus
DEPLOY_WAIT = 45.0   # seconds a deploy waits for each other party's server (under the gateway's 60 s)


class Sites:
    def __init__(self, table: RouteTable, jobs: FlowJobs, federation: Federation, models: FlowModels,
                 party_timeout: float):
        self._watcher: asyncio.Task | None = None
        self.table = table
        self.jobs = jobs
        self.models = models
        self.federation = federation
        self.peers = Peers(table, party_timeout, self._unreachable, self.jobs.note_waiting)
        self.outbox = Outbox(self.peers, federation.fstore.store, self._job_over, self._unreachable)
        self._reported: dict[tuple, int] = {}       # (job, component, role, party) -> last status sent
        jobs.site = self
        jobs.add_end_listener(self._job_ended)
        federation.forward = self._forward
        federation.is_local = self.is_local
        models.is_local = self.is_local
        federation.refused = lambda job_id: self.outbox.refusals.get(job_id, "")
        models.on_deploy.append(self._deployed)

    def watch(self) -> None:
        """From the server's start (its jobs loaded): send again the federation messages that were not
        delivered, and keep an eye on the parties running tasks of jobs driven here."""
        resent = self.outbox.restore(self.table.own_party, {j for j, job in self.jobs.jobs.items() if not job.terminal})
        if resent:
            log.info("%d federation message(s) to other parties' servers are sent again", resent)
        self._watcher = spawn(self._watch(), "watch the FATE parties' servers")

    async def _watch(self) -> None:
        """A party whose tasks run for a job driven here is told again now and then which components it
        should be running (it ignores those it has): a server that died mid-task is noticed like any
        unanswered call, and one restarted while the job waited in its queue learns them again."""
        every = max(1.0, min(30.0, self.peers.party_timeout / 10))
        while True:
            await asyncio.sleep(every)
            for job in list(self.jobs.jobs.values()):
                if job.terminal or self.jobs.driven_elsewhere(job):
                    continue
                running: dict[int, set[str]] = {}
                for t in job.tasks.values():
                    if t.node.startswith(REMOTE_NODE) and not t.status.terminal:
                        running.setdefault(t.party_id, set()).add(t.component)
                for party, components in sorted(running.items()):
                    if self.peers.idle(party):
                        self.start_remote(job, party, sorted(components))

    # ------------------------------------------------------------------ jobs.SiteLink
    def is_local(self, party_id: int) -> bool:
        return self.table.is_local(party_id)

    def check(self, plan: dsl.Plan) -> None:
        if not self.is_local(plan.initiator[1]):
            raise errors.InvalidArgument(
                f"this server runs party {self.table.own_party}; submit the job at the initiator's"
                f" ({plan.initiator[0]} {plan.initiator[1]}) server")
        missing = sorted({p for _, p in plan.parties if not self.is_local(p) and p not in self.table.routes})
        if missing:
            raise errors.InvalidArgument(f"no route to part{'y' if len(missing) == 1 else 'ies'} "
                                         f"{', '.join(map(str, missing))} in this server's route table")

    def _remote_parties(self, job: FlowJob) -> list[int]:
        return sorted({p for _, p in job.parties if not self.is_local(p)})

    def offer(self, job: FlowJob) -> None:
        for party in self._remote_parties(job):
            self.peers.post(party, "OfferJob", pb.OfferJobRequest(
                job_id=job.job_id, dsl_json=job.dsl_json, conf_json=job.conf_json), job.job_id, self._ended(job))

    def start_remote(self, job: FlowJob, party_id: int, components: list[str]) -> None:
        self.peers.post(party_id, "StartComponents", pb.StartComponentsRequest(job_id=job.job_id, components=components),
                        job.job_id, self._ended(job))

    def report(self, job: FlowJob, t: FlowTask) -> None:
        key = (job.job_id, *t.key)
        if self._reported.get(key) == int(t.status) and not t.status.terminal:
            return
        self._reported[key] = int(t.status)
        if t.status.terminal:
            self._reported.pop(key, None)
        self.peers.post(job.initiator[1], "ReportTask", pb.ReportTaskRequest(
            job_id=job.job_id, component=t.component, role=t.role, party_id=t.party_id, status=t.status.fate,
            error=t.error, start_time_ms=t.start_time_ms, end_time_ms=t.end_time_ms, node=t.node, run_pid=t.run_pid),
            job.job_id)

    def _job_ended(self, job: FlowJob) -> None:
        self.outbox.refusals.pop(job.job_id, None)
        if self.jobs.driven_elsewhere(job) or job.job_type not in ("train", "predict"):
            return
        for party in self._remote_parties(job):   # an ended job is told once, and not given up on
            self.peers.post(party, "EndJob", pb.EndJobRequest(job_id=job.job_id, status=job.status.fate,
                                                              reason=job.error), job.job_id)

    def _ended(self, job: FlowJob):
        return lambda: job.terminal

    def _unreachable(self, job_id: str, party: int, reason: str) -> None:
        """A call to `party` for this job was given up: the job fails, saying why."""
        try:
            job = self.jobs.get(job_id) if job_id else None
        except errors.NotFound:
            return
        if job is None or job.terminal:
            return
        if self.jobs.driven_elsewhere(job):
            log.warning("job %s: %s", job_id, reason)   # the initiator decides; it hears of this party's end
            return
        spawn(self.jobs.stop(job_id, J.FAILED, reason), f"fail job {job_id}")

    async def _forward(self, job_id: str, key: tuple, payload: bytes) -> None:
        if self._job_over(job_id):
            raise errors.FailedPrecondition(f"job {job_id} has ended: its messages are no longer sent")
        await self.outbox.send(job_id, key, payload)

    def _job_over(self, job_id: str) -> bool:
        job = self.jobs.jobs.get(job_id)
        return job is None or job.terminal

    async def _deployed(self, row: dict, new_version: str, predict: dict) -> dict:
        """A model deployed here, its initiator's server: every other party deploys its part as the same
        version, and the deploy answers once each did, or why not (as FATE's deploy reports each party;
        a predict job of it is submitted after that answer, so it never overtakes a party's deploy)."""
        if not self.is_local(int(row["initiator_party"])):
            return {}
        roles = json.loads(row["roles_json"] or "{}")
        request = pb.DeployPartRequest(model_id=row["model_id"], model_version=row["model_version"],
                                       new_version=new_version, predict_dsl_json=json.dumps(predict))
        wait = min(DEPLOY_WAIT, self.peers.party_timeout)

        async def deploy_at(party: int) -> str:
            deadline = time.monotonic() + wait
            try:
                if await self.peers.call(party, "DeployPart", request, lambda: time.monotonic() > deadline):
                    return ""
            except errors.TaskhubError as e:
                return str(e)
            return f"{self.peers.unreachable.get(party) or f'party {party} does not answer'} (for {wait:g}s)"

        parties = sorted({int(p) for ids in roles.values() for p in ids if not self.is_local(int(p))})
        why = dict(zip(parties, await asyncio.gather(*(deploy_at(p) for p in parties))))
        return {(role, int(p)): why[int(p)] for role, ids in roles.items() for p in ids if int(p) in why}

    # ------------------------------------------------------------------ what other parties ask
    def _job_of(self, job_id: str, caller: int, initiator_only: bool = True) -> FlowJob:
        job = self.jobs.get(job_id)
        if initiator_only and job.initiator[1] != caller:
            raise errors.PermissionDenied(f"party {caller} is not the initiator of job {job_id}")
        if caller not in {p for _, p in job.parties}:
            raise errors.PermissionDenied(f"party {caller} is not a party of job {job_id}")
        return job

    async def offered(self, caller: int, job_id: str, dsl_json: str, conf_json: str) -> None:
        plan = dsl.parse(dsl_json, conf_json, self.jobs.registry.modules)
        if plan.initiator[1] != caller:
            raise errors.PermissionDenied(f"party {caller} offers job {job_id} whose initiator is {plan.initiator}")
        if not any(self.is_local(p) for _, p in plan.parties):
            raise errors.InvalidArgument(f"party {self.table.own_party} plays no role in job {job_id}")
        await self.jobs.accept_offer(job_id, dsl_json, conf_json)

    async def start(self, caller: int, job_id: str, components: list[str]) -> None:
        self._job_of(job_id, caller)
        await self.jobs.start_components(job_id, list(components))

    def end(self, caller: int, job_id: str, status: str, reason: str) -> None:
        self._job_of(job_id, caller)
        self.jobs.end_from_initiator(job_id, job_status_of(status), reason)

    def reported(self, caller: int, r: pb.ReportTaskRequest) -> None:
        if r.party_id != caller:
            raise errors.PermissionDenied(f"party {caller} reports a task of party {r.party_id}")
        job = self._job_of(r.job_id, caller, initiator_only=False)
        if self.jobs.driven_elsewhere(job):
            raise errors.FailedPrecondition(f"job {r.job_id} was not initiated here")
        self.jobs.remote_task_changed(r.job_id, r.component, r.role, r.party_id, task_status_of(r.status), r.error,
                                      r.start_time_ms, r.end_time_ms, r.node, r.run_pid)

    async def delivered_batch(self, caller: int, r: pb.DeliverBatchRequest) -> None:
        if not r.messages:
            return
        job_id = r.messages[0].job_id
        for m in r.messages:
            if m.src_party_id != caller:
                raise errors.PermissionDenied(f"party {caller} sends as party {m.src_party_id}")
            if m.job_id != job_id:
                raise errors.InvalidArgument("a DeliverBatch holds messages of one job")
        await self.federation.accept_batch(job_id, [(m.name, m.tag, (m.src_role, m.src_party_id),
                                                     (m.dst_role, m.dst_party_id), m.payload) for m in r.messages])

    async def delivered(self, caller: int, r: pb.DeliverRequest) -> None:
        if r.src_party_id != caller:
            raise errors.PermissionDenied(f"party {caller} sends as party {r.src_party_id}")
        await self.federation.accept(r.job_id, r.name, r.tag, (r.src_role, r.src_party_id),
                                     (r.dst_role, r.dst_party_id), r.payload)

    async def deploy_from(self, caller: int, model_id: str, model_version: str, new_version: str,
                          predict_dsl_json: str) -> None:
        rows = self.models.get(model_id, model_version)
        if int(rows[0]["initiator_party"]) != caller:
            raise errors.PermissionDenied(f"party {caller} is not the initiator of model {model_id} {model_version}")
        if not new_version:
            raise errors.InvalidArgument("new_version is required")
        await self.models.deploy(model_id, model_version, None, predict_dsl_json, as_version=new_version)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self.outbox.close()
        await self.peers.close()
