"""FATE jobs on taskhub's engine: one taskhub task per (component, role, party).

Runs on the server's event loop. A submitted job waits in the queue (queue.py) until fewer than
`max_jobs` run; then every component whose inputs are ready (graph.py) becomes one taskhub task
per party that runs it. The engine tells us each status change of those tasks (engine.OBSERVER);
a task that ends successfully may make more components ready; one that fails fails the job and
cancels the rest. Job and task statuses change only through the StatusWriter (status.py),
against the tables of server/flow/model.py. FlowJobs ties the three together and answers reads.
With a SiteLink (server/sites/: each party on its own server), the initiator's FlowJobs starts other
parties' components through it and hears their statuses back; theirs run only what it starts.
"""
from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import AsyncIterator, Callable, Protocol

from .. import auth, errors
from ..background import spawn
from ..engine import Engine
from ..model import ANY_NAMESPACE, Status, Task, TaskSpec, TaskType, now_ms
from . import dsl
from .graph import OBSERVER_NAME, RUNTIME, JobGraph, ModelSource
from .model import RERUNNABLE, TASK_DONE, FlowJob, FlowTask, JobStatus, TaskStatus
from .queue import JobQueue
from .registry import Registry
from .status import StatusWriter
from .store import FlowStore

J, T = JobStatus, TaskStatus
DEFAULT_NAMESPACE = "fate"
REMOTE_NODE = "site:"   # FlowTask.node of a task started at another party's server ("site:<party id>")

_FROM_TASKHUB = {
    Status.RUNNING: T.RUNNING, Status.CANCELLING: T.RUNNING, Status.SUCCESS: T.SUCCESS,
    Status.CANCELLED: T.CANCELED, Status.FAILED: T.FAILED,
}


def flow_status_of(task: Task) -> TaskStatus:
    """A FATE task status from the status of the taskhub task that runs it."""
    st = _FROM_TASKHUB.get(task.status, T.WAITING)
    if st == T.FAILED and task.error.startswith("timed out"):
        return T.TIMEOUT
    return st


class JobIds:
    """FATE's job ids: YYYYMMDDHHMMSSffffff plus a two-digit counter, never repeated."""

    def __init__(self):
        self._last = ""
        self._n = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            stamp = datetime.now().strftime("%Y%m%d%H%M%S%f")
            if stamp <= self._last[:20]:
                self._n += 1
                stamp = self._last[:20]
            else:
                self._n = 0
            self._last = f"{stamp}{self._n:02d}"
            return self._last


@dataclass
class FlowHooks:
    """What other parts of the server add to FATE jobs, given to FlowJobs when it is made."""
    model_source: ModelSource | None = None                  # a predict job's pipeline.<cpn> models
    model_check: Callable[[dsl.Plan, str], None] | None = None  # (plan, namespace): a predict job's model exists
    deployed_dsl: Callable[[str, str, str], dict] | None = None  # (model_id, version, namespace) -> its predict DSL
    on_job_end: list[Callable[[FlowJob], None]] = field(default_factory=list)  # models, federation clean-up


class SiteLink(Protocol):
    """The other parties' servers, when each party runs its own (server/sites/sites.py); None: all
    parties run here. The initiator's server drives the graph; the others run what it starts."""

    def is_local(self, party_id: int) -> bool: ...
    def check(self, plan: dsl.Plan) -> None: ...                       # InvalidArgument: unroutable, not ours
    def offer(self, job: FlowJob) -> None: ...                        # initiator -> every other party
    def start_remote(self, job: FlowJob, party_id: int, components: list[str]) -> None: ...
    def report(self, job: FlowJob, t: FlowTask) -> None: ...           # party -> initiator


class FlowJobs:
    def __init__(self, engine: Engine, fstore: FlowStore, registry: Registry, max_jobs: int = 4, *,
                 hooks: FlowHooks | None = None, ids: JobIds | None = None):
        self.engine = engine
        self.fstore = fstore
        self.registry = registry
        self.hooks = hooks or FlowHooks()
        self.queue = JobQueue(max_jobs)
        self.graph = JobGraph(engine, fstore, registry, self.hooks.model_source)
        self.status = StatusWriter(fstore)
        self.jobs: dict[str, FlowJob] = {}          # unfinished jobs (and ended ones until their tasks end)
        self.plans: dict[str, dsl.Plan] = {}
        self.by_taskhub: dict[int, FlowTask] = {}
        self.uids: dict[str, int] = {}               # live component tasks: taskhub uid -> id
        self.ids = ids or JobIds()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._advancing: dict[str, asyncio.Lock] = {}
        # A job another party initiated that waits here for a slot: the components its initiator
        # already said to start (they start when it is admitted).
        self._held_starts: dict[str, set[str]] = {}
        self._end_listeners = list(self.hooks.on_job_end)
        self.site: SiteLink | None = None
        engine.observers.subscribe(OBSERVER_NAME, call=self._on_taskhub_change)

    def add_end_listener(self, callback: Callable[[FlowJob], None]) -> None:
        """Call `callback(job)` when a job ends (parts made after FlowJobs, as the federation)."""
        self._end_listeners.append(callback)

    # ------------------------------------------------------------------ life
    async def load(self) -> None:
        """After the engine recovered its tasks: bring back every unfinished job where it was."""
        for job in self.fstore.unfinished_jobs():
            try:
                plan = dsl.parse(job.dsl_json, job.conf_json) if job.job_type in ("train", "predict") else None
            except errors.TaskhubError as e:
                job.tasks = self._in_dsl_order(job, self.fstore.job_tasks(job.job_id))
                self.jobs[job.job_id] = job
                self._end_job(job, J.FAILED, f"its DSL or conf no longer parses: {e}")
                continue
            job.tasks = self._in_dsl_order(job, self.fstore.job_tasks(job.job_id))
            self.jobs[job.job_id] = job
            if plan is None:  # an upload or download the server was carrying out when it stopped
                self.end_recorded(job, False, "interrupted: the server stopped while it ran; upload again")
                continue
            self.plans[job.job_id] = plan
            elsewhere = self.driven_elsewhere(job)
            if job.status == J.WAITING:   # its initiator's server says again what to start (Sites._watch)
                self.queue.enqueue(job.job_id)
                continue
            self.queue.resume(job.job_id)
            for t in job.tasks.values():
                if t.taskhub_task_id and not t.status.terminal:
                    self.by_taskhub[t.taskhub_task_id] = t
                    try:
                        live = self.engine.get(ANY_NAMESPACE, t.taskhub_task_id)
                    except errors.NotFound:
                        self.status.set_task_status(job, t, T.FAILED, "its taskhub task was deleted")
                        continue
                    self.uids[live.uid] = live.id
                    self._apply(job, t, live)
                    if elsewhere:
                        self.site.report(job, t)
            if elsewhere:
                continue
            self._arm_timeout(job)
            if not job.terminal:
                if self.site is not None:   # the other parties hear of the job again (they ignore repeats)
                    self.site.offer(job)
                    self._restart_remote(job)
                await self._advance(job)
        await self._admit()

    def driven_elsewhere(self, job: FlowJob) -> bool:
        """A job another party's server initiated: that server starts this party's tasks."""
        return (self.site is not None and job.job_type in ("train", "predict")
                and not self.site.is_local(job.initiator[1]))

    def _restart_remote(self, job: FlowJob) -> None:
        by_party: dict[int, list[str]] = {}
        for t in job.tasks.values():
            if t.node.startswith(REMOTE_NODE) and not t.status.terminal:
                by_party.setdefault(t.party_id, []).append(t.component)
        for party, components in by_party.items():
            self.site.start_remote(job, party, sorted(set(components)))

    def close(self) -> None:
        """Server shutdown: job timeouts stop ticking (they are re-armed from the store at the next start)."""
        for timer in self._timers.values():
            timer.cancel()

    # ------------------------------------------------------------------ submit
    async def submit(self, dsl_json: str, conf_json: str, namespace: str = "") -> FlowJob:
        namespace = namespace or DEFAULT_NAMESPACE
        if self.hooks.deployed_dsl is not None and not dsl.has_components(dsl_json):
            named = dsl.named_model(conf_json)
            if named is not None:   # a predict conf alone: the deployed model's predict DSL runs
                dsl_json = json.dumps(self.hooks.deployed_dsl(*named, namespace))
        plan = dsl.parse(dsl_json, conf_json, self.registry.modules)
        if self.site is not None:
            self.site.check(plan)
        if plan.job_type == "predict" and self.hooks.model_check is not None:
            self.hooks.model_check(plan, namespace)
        job = await self._insert(self.ids.next(), namespace, plan, dsl_json, conf_json)
        if self.site is not None:
            self.site.offer(job)
        self.queue.enqueue(job.job_id)
        await self._admit()
        return job

    async def accept_offer(self, job_id: str, dsl_json: str, conf_json: str, namespace: str = "") -> FlowJob:
        """A job the initiator's server sent: this party's tasks only, started when it says so."""
        try:
            return self.get(job_id)
        except errors.NotFound:
            pass
        plan = dsl.parse(dsl_json, conf_json, self.registry.modules)
        job = await self._insert(job_id, namespace or DEFAULT_NAMESPACE, plan, dsl_json, conf_json, local_only=True)
        # It takes one of this server's max_jobs slots like a job submitted here: a party running
        # many jobs it did not initiate queues them rather than running them all at once.
        self.queue.enqueue(job.job_id)
        await self._admit()
        return job

    async def _insert(self, job_id: str, namespace: str, plan: dsl.Plan, dsl_json: str, conf_json: str,
                      local_only: bool = False) -> FlowJob:
        self.engine.validate(TaskSpec(type=TaskType.PYTHON, namespace=namespace, callable=RUNTIME), trusted=True)
        ts = now_ms()
        job = FlowJob(job_id=job_id, namespace=namespace, job_type=plan.job_type, dsl_json=dsl_json,
                      conf_json=conf_json, initiator=plan.initiator, parties=plan.parties,
                      timeout_seconds=plan.timeout_seconds, description=plan.description, create_time_ms=ts,
                      update_time_ms=ts)
        if plan.job_type == "train":
            job.model_id, job.model_version = dsl.model_id_of(plan.roles), job.job_id
        else:
            job.model_id, job.model_version = plan.model_id, plan.model_version
        params = {}
        for c in plan.components:
            runs_on = self.registry.get(c.module).roles
            for role, party in plan.parties:
                if local_only and not self.site.is_local(party):
                    continue
                t = FlowTask(job.job_id, c.name, c.module, role, party, create_time_ms=ts)
                if role not in runs_on:
                    t.status = T.PASS
                    t.end_time_ms = ts
                job.tasks[t.key] = t
                params[t.key] = plan.params(c.name, role, party)
        await self.fstore.insert_job(job, params)
        self.jobs[job.job_id] = job
        self.plans[job.job_id] = plan
        return job

    def record_job(self, job_type: str, namespace: str, conf: dict, party: tuple[str, int], module: str,
                   description: str = "") -> FlowJob:
        """A job the server itself carries out (upload, download): one task, `local` role."""
        ts = now_ms()
        job = FlowJob(job_id=self.ids.next(), namespace=namespace or DEFAULT_NAMESPACE, job_type=job_type,
                      dsl_json=json.dumps({"components": {f"{job_type}_0": {"module": module}}}),
                      conf_json=json.dumps(conf), initiator=party, parties=[party], description=description,
                      create_time_ms=ts, update_time_ms=ts)
        t = FlowTask(job.job_id, f"{job_type}_0", module, party[0], party[1], create_time_ms=ts)
        job.tasks[t.key] = t
        return job

    async def begin_recorded(self, job: FlowJob) -> None:
        await self.fstore.insert_job(job, {})
        self.jobs[job.job_id] = job   # read from memory until its end is committed (_forget_if_settled)
        self.status.set_job_status(job, J.READY)
        self.status.set_job_status(job, J.RUNNING)
        for t in job.tasks.values():
            self.status.set_task_status(job, t, T.RUNNING)

    def end_recorded(self, job: FlowJob, ok: bool, error: str = "") -> None:
        for t in job.tasks.values():
            if not t.status.terminal:
                self.status.set_task_status(job, t, T.SUCCESS if ok else T.FAILED, error)
        self.status.set_job_status(job, J.SUCCESS if ok else J.FAILED, error)
        self._forget_if_settled(job)

    # ------------------------------------------------------------------ queue
    async def _admit(self) -> None:
        while (job_id := self.queue.admit()) is not None:
            job = self.jobs.get(job_id)
            if job is None or job.status != J.WAITING:
                self.queue.release(job_id)
                continue
            self.status.set_job_status(job, J.READY)
            if self.driven_elsewhere(job):
                await self.start_components(job_id, sorted(self._held_starts.pop(job_id, ())))
                continue
            self._arm_timeout(job)
            await self._advance(job)
        self._publish_queue_positions()

    def jobs_by_status(self) -> dict[str, int]:
        """FATE status name -> how many jobs have it (for /metrics)."""
        counts = self.fstore.count_jobs_by_status()
        return {s.fate: counts.get(int(s), 0) for s in JobStatus}

    def queue_position(self, job_id: str) -> int:
        return self.queue.position(job_id)

    def _publish_queue_positions(self) -> None:
        for job_id in self.queue.waiting:
            job = self.jobs.get(job_id)
            if job is not None and self.status.watched(job_id):
                self.status.publish(job, None)

    async def clean_queue(self) -> list[str]:
        """Cancels the waiting jobs of the caller's namespaces (auth.CALL_SCOPE), no others."""
        waiting = [j for j in self.queue.waiting if j in self.jobs and auth.in_scope(self.jobs[j].namespace)]
        for job_id in waiting:
            await self.stop(job_id, J.CANCELED, "the queue was cleaned")
        return waiting

    def _arm_timeout(self, job: FlowJob) -> None:
        if job.job_id in self._timers or job.terminal:
            return
        start = job.start_time_ms or now_ms()
        left = max(0.0, job.timeout_seconds - (now_ms() - start) / 1000)
        loop = asyncio.get_running_loop()
        self._timers[job.job_id] = loop.call_later(
            left, lambda: spawn(
                self.stop(job.job_id, J.TIMEOUT, f"it ran longer than its job_timeout of {job.timeout_seconds:g}s"),
                f"timeout of job {job.job_id}"))

    # ------------------------------------------------------------------ running the graph
    async def _advance(self, job: FlowJob) -> None:
        """Start every component whose upstream components are done; end the job when all are.

        One at a time per job: two tasks ending together must not both create the next tasks."""
        lock = self._advancing.setdefault(job.job_id, asyncio.Lock())
        async with lock:
            await self._advance_locked(job)
        if job.terminal:
            self._advancing.pop(job.job_id, None)

    async def _advance_locked(self, job: FlowJob) -> None:
        if job.terminal:
            return
        local = self.site.is_local if self.site is not None else None
        all_done, ready = self.graph.next_tasks(job, self.plans[job.job_id], local)
        if all_done:
            self._end_job(job, J.SUCCESS, "")
            return
        if not ready:
            return
        self._mark_running(job)
        remote: dict[int, list[FlowTask]] = {}
        for t, spec in ready:
            if spec is None:
                remote.setdefault(t.party_id, []).append(t)
        if remote:
            for party, tasks in remote.items():
                for t in tasks:
                    t.node = f"{REMOTE_NODE}{party}"
                self.fstore.save_tasks(tasks)
                self.site.start_remote(job, party, sorted({t.component for t in tasks}))
        await self._create_tasks(job, [(t, spec) for t, spec in ready if spec is not None])

    def _mark_running(self, job: FlowJob) -> None:
        if job.status == J.WAITING:
            self.status.set_job_status(job, J.READY)
        if job.status == J.READY:
            job.start_time_ms = now_ms()
            self.status.set_job_status(job, J.RUNNING)

    async def start_components(self, job_id: str, components: list[str]) -> None:
        """The initiator's server says: start this party's tasks of these components (none: it only
        checks that this server is up and has the job)."""
        job = self.get(job_id)
        if job.terminal or job_id not in self.plans or not components:
            return
        if job_id in self.queue.waiting:   # no slot for it yet here: started once admitted
            self._held_starts.setdefault(job_id, set()).update(components)
            return
        plan = self.plans[job_id]
        wanted = [c for c in plan.components if c.name in components]
        ready = [(t, self.graph.spec(job, plan, c, t)) for c in wanted for t in job.tasks.values()
                 if t.component == c.name and t.status == T.WAITING and not t.taskhub_task_id]
        self._mark_running(job)
        await self._create_tasks(job, ready)

    async def _create_tasks(self, job: FlowJob, ready: list[tuple[FlowTask, TaskSpec]]) -> None:
        if not ready:
            return
        owners = [t for t, _ in ready]
        try:
            created = await self.engine.create([spec for _, spec in ready], trusted=True)
        except errors.TaskhubError as e:
            self._end_job(job, J.FAILED, f"its tasks could not be created: {e}")
            return
        for t, task in zip(owners, created):
            t.taskhub_task_id = task.id
            self.by_taskhub[task.id] = t
            self.uids[task.uid] = task.id
        self.fstore.save_tasks(owners)
        # The engine places a task as soon as its insert commits, before create returns: changes it
        # told the observer before the task was registered above were dropped, so catch up now.
        for task in created:
            try:
                self._on_taskhub_change(self.engine.get(ANY_NAMESPACE, task.id))
            except errors.NotFound:
                pass
        if job.terminal:  # the job ended while its tasks were being created: they must not run
            for task in created:
                self.engine.cancel(ANY_NAMESPACE, task.id, f"job {job.job_id} {job.status.fate}")

    def component_status(self, job: FlowJob, component: str) -> TaskStatus:
        return self.graph.component_status(job, component)

    # ------------------------------------------------------------------ taskhub tells us
    def _on_taskhub_change(self, task: Task) -> None:
        t = self.by_taskhub.get(task.id)
        job = self.jobs.get(t.job_id) if t else None
        if t is None or job is None:
            return
        before = t.status
        self._apply(job, t, task)
        if t.status.terminal:
            self.by_taskhub.pop(task.id, None)
            self.uids.pop(task.uid, None)
        if self.driven_elsewhere(job):
            if t.status != before or t.status == T.RUNNING:
                self.site.report(job, t)
            self._forget_if_settled(job)
            return
        self._task_changed(job, t)

    def remote_task_changed(self, job_id: str, component: str, role: str, party_id: int, status: TaskStatus,
                            error: str, start_ms: int, end_ms: int, node: str, pid: int) -> None:
        """A party's server reports one of its tasks (this server initiated the job)."""
        job = self.get(job_id)
        t = job.tasks.get((component, role, party_id))
        if t is None:
            raise errors.NotFound(f"job {job_id} has no task {component} for {role} {party_id}")
        if t.status.terminal or job_id not in self.jobs:
            return
        t.start_time_ms = t.start_time_ms or start_ms
        t.node, t.run_pid = f"{REMOTE_NODE}{party_id}" + (f"/{node}" if node else ""), pid
        if status != t.status:
            if status.terminal:
                t.end_time_ms = end_ms or now_ms()
            self.status.set_task_status(job, t, status, error)
        else:
            self.fstore.save_tasks([t])
            self.status.publish(job, t)
        self._task_changed(job, t)

    def _task_changed(self, job: FlowJob, t: FlowTask) -> None:
        """A task of a job driven here ended (here, or at another party's server): the graph goes on, or
        the job ends with it."""
        if t.status.terminal:
            if t.status == T.SUCCESS:
                if not job.terminal:
                    spawn(self._advance(job), f"advance job {job.job_id}")
            elif not job.terminal:
                what = f"{t.component} ({t.role} {t.party_id})"
                if t.status == T.CANCELED:
                    self._end_job(job, J.CANCELED, f"task {what} was cancelled")
                else:
                    self._end_job(job, J.FAILED, f"task {what} {t.status.fate}: {t.error}")
            self._forget_if_settled(job)

    def _apply(self, job: FlowJob, t: FlowTask, task: Task) -> None:
        """Bring a FATE task in line with the taskhub task that runs it."""
        if t.status.terminal:  # settled already (cancelled with its job before its task started)
            return
        new = flow_status_of(task)
        seen = (t.run_pid, t.node, t.retries)
        t.run_pid, t.node, t.retries = task.pid, task.node, task.retries
        if task.start_time_ms and not t.start_time_ms:
            t.start_time_ms = task.start_time_ms
        if new == t.status:
            if seen != (t.run_pid, t.node, t.retries):
                self.fstore.save_tasks([t])
                self.status.publish(job, t)
            return
        if new.terminal:
            t.end_time_ms = task.done_time_ms or now_ms()
        self.status.set_task_status(job, t, new, task.error if new in (T.FAILED, T.TIMEOUT, T.CANCELED) else "")

    # ------------------------------------------------------------------ stopping
    async def stop(self, job_id: str, status: JobStatus = J.CANCELED, reason: str = "") -> FlowJob:
        job = self.get(job_id)
        if job.terminal:
            raise errors.FailedPrecondition(f"job {job_id} already ended ({job.status.fate}); there is nothing to stop")
        if status not in (J.CANCELED, J.FAILED, J.TIMEOUT):
            raise errors.InvalidArgument("a job can be stopped as canceled, failed or timeout")
        self._end_job(job, status, reason or "stopped by a user")
        return job

    def note_waiting(self, job_id: str, party_id: int, reason: str) -> None:
        """While a party's server does not answer, the job says so (its error, cleared once it answers)."""
        job = self.jobs.get(job_id)
        if job is None or job.terminal:
            return
        if reason or job.error.startswith(f"waiting for party {party_id}:"):
            job.error = reason
            self.fstore.save_job(job)
            self.status.publish(job, None)

    def end_from_initiator(self, job_id: str, status: JobStatus, reason: str) -> None:
        """The initiator's server ended the job: so it ends here, this party's tasks with it."""
        job = self.get(job_id)
        if job.terminal:
            return
        if status == J.SUCCESS:
            self._mark_running(job)
        self._end_job(job, status, reason)

    def _end_job(self, job: FlowJob, status: JobStatus, error: str) -> None:
        if job.terminal:
            return
        job.end_time_ms = now_ms()
        self.status.set_job_status(job, status, error)
        self._cancel_tasks(job, f"job {job.job_id} {status.fate}" + (f": {error}" if error else ""))
        timer = self._timers.pop(job.job_id, None)
        if timer:
            timer.cancel()
        self._held_starts.pop(job.job_id, None)
        if self.queue.release(job.job_id):
            spawn(self._admit(), "admit flow jobs")
        for cb in self._end_listeners:
            cb(job)
        self._forget_if_settled(job)

    def _cancel_tasks(self, job: FlowJob, reason: str) -> None:
        waiting = []
        for t in job.tasks.values():
            if t.status.terminal:
                continue
            if t.taskhub_task_id:
                try:
                    self.engine.cancel(ANY_NAMESPACE, t.taskhub_task_id, reason)
                except errors.NotFound:
                    waiting.append(t)
            else:
                waiting.append(t)
        for t in waiting:
            t.end_time_ms = now_ms()
            self.status.set_task_status(job, t, T.CANCELED, reason)

    def _forget_if_settled(self, job: FlowJob) -> None:
        """Once the job and all its tasks have ended and that is committed, it lives only in the store
        (and watchers are told the end only then, so what they read next is what was committed)."""
        if job.terminal and all(t.status.terminal for t in job.tasks.values()):
            self.fstore.save_job(job, wait=True).add_done_callback(lambda _: self._forget(job))

    def _forget(self, job: FlowJob) -> None:
        current = self.jobs.get(job.job_id)
        if current is not None and current is not job:
            return   # rerun meanwhile: the job runs on
        if current is job:
            del self.jobs[job.job_id]
            self.plans.pop(job.job_id, None)
        self.status.settled(job.job_id)

    # ------------------------------------------------------------------ rerun and clean
    async def rerun(self, job_id: str, component: str = "", force: bool = False) -> tuple[FlowJob, list[str]]:
        """Runs an ended job again from the components that did not succeed (FATE's job/rerun): with
        `component`, that one and every component downstream of it; with `force`, succeeded ones too.
        Each rerun task becomes a new version (its outputs and metrics are cleared); succeeded
        components keep theirs. A non-succeeded component upstream of a rerun one reruns as well.
        (job, the components rerun)."""
        job = self.get(job_id)
        plan = self.plan(job)
        if plan is None:
            raise errors.FailedPrecondition(f"job {job_id} is a {job.job_type} job; only train and predict jobs"
                                            f" can be rerun (run the {job.job_type} again)")
        if self.site is not None and any(not self.site.is_local(p) for _, p in job.parties):
            raise errors.FailedPrecondition(f"job {job_id} runs across sites (parties on other servers); rerun is"
                                            " not supported there yet: submit the job again")
        if job.status not in RERUNNABLE:
            raise errors.FailedPrecondition(f"job {job_id} is {job.status.fate}; only an ended job (failed, canceled,"
                                            " timeout or success) can be rerun")
        if not all(t.status.terminal for t in job.tasks.values()):
            raise errors.FailedPrecondition(f"job {job_id} ended but some of its tasks are still stopping;"
                                            " rerun it once they have")
        by_name = {c.name: c for c in plan.components}
        if component and component != PIPELINE:
            if component not in by_name:
                raise errors.InvalidArgument(f"job {job_id} has no component {component!r};"
                                             f" its components: {', '.join(by_name)}")
            chosen = {component} | _downstream(plan, component)
        else:
            chosen = set(by_name)
        undone = {n for n in by_name if self.graph.component_status(job, n) not in TASK_DONE}
        rerun = {n for n in chosen if force or n in undone}
        for name in list(rerun):  # what a rerun component needs must be done, or rerun too
            rerun |= _upstream(plan, name) & undone
        tasks = [t for t in job.tasks.values() if t.component in rerun and t.status != T.PASS]
        if not tasks:
            what = f"component {component} and its downstream components" if chosen != set(by_name) else \
                "every component"
            raise errors.FailedPrecondition(f"nothing of job {job_id} to rerun: {what} succeeded;"
                                            " pass force to run them again")
        await self.fstore.clear_task_outputs(tasks, tracking=True)
        # A fresh object: the ended one may still be waiting to be forgotten (_forget_if_settled).
        job = copy.copy(job)
        job.tasks = {k: copy.copy(t) for k, t in job.tasks.items()}
        for t in job.tasks.values():
            if t.component in rerun and t.status != T.PASS:
                self.status.set_task_status(job, t, T.WAITING)
        self.status.set_job_status(job, J.WAITING)
        self.jobs[job.job_id] = job
        self.plans[job.job_id] = plan
        self.queue.enqueue(job.job_id)
        await self._admit()
        return job, [c.name for c in plan.components if c.name in rerun]

    async def clean(self, job_id: str, role: str = "", party_id: int = 0, component: str = "") -> tuple[int, int, int]:
        """Deletes what an ended job's tasks left behind (FATE's job/clean): their output tables and
        metrics; models (deployed or not) stay. (tasks, tables, metric series) cleaned."""
        job = self.get(job_id)
        if not job.terminal or not all(t.status.terminal for t in job.tasks.values()):
            raise errors.FailedPrecondition(f"job {job_id} is {job.status.fate}; stop it (job/stop) or let it end"
                                            " before cleaning it")
        tasks = [t for t in job.tasks.values() if (not role or t.role == role) and (not party_id or t.party_id == party_id)
                 and (not component or t.component == component)]
        if not tasks:
            raise errors.NotFound(f"job {job_id} has no task of component {component or 'any'}, role {role or 'any'},"
                                  f" party {party_id or 'any'}")
        tables, metrics = await self.fstore.clear_task_outputs(tasks, tracking=False)
        return len(tasks), tables, metrics

    # ------------------------------------------------------------------ reading
    def get(self, job_id: str) -> FlowJob:
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        job = self.fstore.get_job(job_id) if job_id else None
        if job is None:
            raise errors.NotFound(f"no job with id {job_id!r}")
        job.tasks = self._in_dsl_order(job, self.fstore.job_tasks(job_id))
        return job

    def _in_dsl_order(self, job: FlowJob, tasks: list[FlowTask]) -> dict:
        """Tasks keyed and ordered as submitted: components in DSL order, parties in conf order."""
        try:
            names = list(json.loads(job.dsl_json).get("components", {}))
        except (ValueError, AttributeError):
            names = []
        rank = {n: i for i, n in enumerate(names)}
        parties = {tuple(p): i for i, p in enumerate(job.parties)}
        tasks.sort(key=lambda t: (rank.get(t.component, len(rank)), parties.get((t.role, t.party_id), 0)))
        return {t.key: t for t in tasks}

    def list_jobs(self, job_id: str, party: tuple[str, int] | None, statuses: list[int], job_type: str,
                  limit: int, page: int) -> tuple[list[FlowJob], int]:
        """Matching jobs, newest first, one page; unfinished ones as they are now."""
        limit, offset = _page(limit, page)
        jobs, total = self.fstore.list_jobs(job_id, party, statuses, job_type, limit, offset, auth.CALL_SCOPE.get())
        return [self.jobs.get(j.job_id, j) for j in jobs], total

    def list_tasks(self, job_id: str, role: str, party_id: int, component: str, statuses: list[int],
                   limit: int, page: int) -> tuple[list[FlowTask], int]:
        limit, offset = _page(limit, page)
        tasks, total = self.fstore.list_tasks(job_id, role, party_id, component, statuses, limit, offset,
                                              auth.CALL_SCOPE.get())
        live = []
        for t in tasks:
            job = self.jobs.get(t.job_id)
            live.append(job.tasks.get(t.key, t) if job else t)
        return live, total

    def plan(self, job: FlowJob) -> dsl.Plan | None:
        plan = self.plans.get(job.job_id)
        if plan is None and job.job_type in ("train", "predict"):
            plan = dsl.parse(job.dsl_json, job.conf_json)
        return plan

    def running_component(self, uid: str) -> tuple[FlowJob, FlowTask] | None:
        """The live component task whose taskhub task has this uid and runs now (the engine's view,
        which is ahead of the store's), with its job."""
        task = self.engine.tasks.get(self.uids.get(uid, 0))
        t = self.by_taskhub.get(task.id) if task is not None else None
        if t is None or task.status not in (Status.RUNNING, Status.CANCELLING):
            return None
        return self.get(t.job_id), t

    async def trace(self, job_id: str, component: str = "", role: str = "", party_id: int = 0,
                    follow: bool = True) -> AsyncIterator[tuple[FlowTask, list[tuple]]]:
        """(task, log lines) of each matching task in turn; with follow, live, and waiting for tasks
        yet to start until the job ends."""
        def wanted(t: FlowTask) -> bool:
            return ((not component or t.component == component) and (not role or t.role == role)
                    and (not party_id or t.party_id == party_id))

        self.get(job_id)
        done: set[tuple] = set()
        with self.status.news.subscribe(job_id, limit=1) as changed:
            while True:
                changed.clear()  # before reading the job: a change made after the read wakes the wait below
                current = self.get(job_id)
                ready = [t for t in current.tasks.values() if wanted(t) and t.key not in done and t.taskhub_task_id]
                for t in ready:
                    done.add(t.key)
                    try:
                        task = self.engine.get(ANY_NAMESPACE, t.taskhub_task_id)
                    except errors.NotFound:
                        continue
                    async for batch in self.engine.trace(task, 0, follow):
                        yield t, batch
                if ready:
                    continue
                may_start = [t for t in current.tasks.values() if wanted(t) and t.key not in done
                             and not t.status.terminal]
                if not follow or not may_start:
                    return
                await changed.wait()

    # ------------------------------------------------------------------ watching
    async def watch(self, job_id: str) -> AsyncIterator[tuple[FlowJob, FlowTask | None]]:
        """(job, None) now and (job, task) for each task, then each change, until the job and its tasks end."""
        with self.status.news.subscribe(job_id) as changes:
            job = self.get(job_id)
            yield copy.copy(job), None
            for t in list(job.tasks.values()):
                yield copy.copy(job), copy.copy(t)
            if job_id not in self.jobs:
                return
            while True:
                item = await changes.get()
                if item is None:
                    return
                yield item

MAX_PAGE = 10_000
PIPELINE = "pipeline"   # FATE's component name for the whole job (job/rerun)


def _downstream(plan: dsl.Plan, name: str) -> set[str]:
    """Every component that reads, directly or not, from `name`."""
    found: set[str] = set()
    grew = True
    while grew:   # DSL order need not be the graph's
        grew = False
        for c in plan.components:
            if c.name not in found and (name in c.upstream or found & set(c.upstream)):
                found.add(c.name)
                grew = True
    return found


def _upstream(plan: dsl.Plan, name: str) -> set[str]:
    by_name = {c.name: c for c in plan.components}
    found, todo = set(), list(by_name[name].upstream)
    while todo:
        up = todo.pop()
        if up not in found:
            found.add(up)
            todo.extend(by_name[up].upstream)
    return found


def _page(limit: int, page: int) -> tuple[int, int]:
    """(limit, offset) of a page; InvalidArgument for a limit or page out of range."""
    if limit < 0 or limit > MAX_PAGE:
        raise errors.InvalidArgument(f"limit must be between 1 and {MAX_PAGE}")
    if page < 0:
        raise errors.InvalidArgument("page must be 1 or more")
    limit = limit or 100
    return limit, (max(page, 1) - 1) * limit


def day_range_ms(date: str) -> tuple[int, int]:
    """YYYYMMDD -> [start, end) in ms, local time."""
    try:
        start = time.mktime(time.strptime(date, "%Y%m%d"))
    except ValueError:
        raise errors.InvalidArgument(f"date {date!r} must look like YYYYMMDD") from None
    return int(start * 1000), int((start + 86400) * 1000)
