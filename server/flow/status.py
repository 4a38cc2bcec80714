"""The one writer of FATE job and task statuses, and the news of every change.

`set_job_status` / `set_task_status` check each change against the transition tables of
server/flow/model.py, write it through the FlowStore and publish it in `news` (server/broadcast.py),
keyed by job id: a (job, task | None) snapshot at each change, None once the job is settled.
"""
from __future__ import annotations

import copy
import logging

from ..broadcast import Broadcaster
from ..model import now_ms
from .model import (FlowJob, FlowTask, IllegalFlowTransition, JobStatus, TaskStatus, check_job_transition,
                    check_task_transition)
from .store import FlowStore

log = logging.getLogger(__name__)
J, T = JobStatus, TaskStatus


class StatusWriter:
    def __init__(self, fstore: FlowStore):
        self.fstore = fstore
        self.news = Broadcaster()

    # ------------------------------------------------------------------ writing
    def set_job_status(self, job: FlowJob, new: JobStatus, error: str = "") -> None:
        try:
            check_job_transition(job.status, new)
        except IllegalFlowTransition:
            log.exception("refused: flow job %s", job.job_id)
            raise
        job.status = new
        job.update_time_ms = now_ms()
        if new == J.WAITING:   # a rerun: the job runs (and may time out) afresh
            job.start_time_ms = job.end_time_ms = 0
            job.error = ""
        if new == J.RUNNING and not job.start_time_ms:
            job.start_time_ms = job.update_time_ms
        if new.terminal:
            job.end_time_ms = job.end_time_ms or job.update_time_ms
            job.error = error
        self._update_progress(job)
        self.fstore.save_job(job)
        self.publish(job, None)

    def set_task_status(self, job: FlowJob, t: FlowTask, new: TaskStatus, error: str = "") -> None:
        try:
            check_task_transition(t.status, new)
        except IllegalFlowTransition:
            log.exception("refused: flow task %s %s %s %s", t.job_id, t.component, t.role, t.party_id)
            raise
        if new == T.WAITING and t.status.terminal:   # a rerun: a new version of the task, not run yet
            t.task_version += 1
            t.taskhub_task_id = t.run_pid = t.retries = t.start_time_ms = t.end_time_ms = 0
            t.node = t.error = ""
        t.status = new
        if error or new == T.SUCCESS:
            t.error = error
        if new == T.RUNNING and not t.start_time_ms:
            t.start_time_ms = now_ms()
        if new.terminal and not t.end_time_ms:
            t.end_time_ms = now_ms()
        self.fstore.save_tasks([t])
        if self._update_progress(job):
            job.update_time_ms = now_ms()
            self.fstore.save_job(job)
            self.publish(job, None)
        self.publish(job, t)

    @staticmethod
    def _update_progress(job: FlowJob) -> bool:
        tasks = [t for t in job.tasks.values() if t.status != T.PASS]
        done = sum(1 for t in tasks if t.status.terminal)
        progress = 100 if job.status == J.SUCCESS or not tasks else 100 * done // len(tasks)
        changed = progress != job.progress
        job.progress = progress
        return changed

    # ------------------------------------------------------------------ telling
    def publish(self, job: FlowJob, task: FlowTask | None) -> None:
        if job.job_id in self.news.topics:
            self.news.publish(job.job_id, (copy.copy(job), copy.copy(task) if task else None))

    def watched(self, job_id: str) -> bool:
        return job_id in self.news.topics

    def settled(self, job_id: str) -> None:
        """The job's end is committed: its watchers are done."""
        self.news.publish(job_id, None)
