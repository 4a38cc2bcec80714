"""Which FATE jobs may run: a FIFO of waiting jobs and the set of running ones, at most
`max_jobs` running (FATE's job queue; `CleanQueue` empties it)."""
from __future__ import annotations


class JobQueue:
    def __init__(self, max_jobs: int = 4):
        self.max_jobs = max(1, max_jobs)
        self.waiting: list[str] = []   # job ids, first in first out
        self.running: set[str] = set()

    def enqueue(self, job_id: str) -> None:
        self.waiting.append(job_id)

    def admit(self) -> str | None:
        """The next waiting job, now counted as running, if a slot is free; else None."""
        if not self.waiting or len(self.running) >= self.max_jobs:
            return None
        job_id = self.waiting.pop(0)
        self.running.add(job_id)
        return job_id

    def resume(self, job_id: str) -> None:
        """A job found running after a restart takes its slot again."""
        self.running.add(job_id)

    def release(self, job_id: str) -> bool:
        """The job ended (or left the queue); True if it freed a running slot."""
        if job_id in self.waiting:
            self.waiting.remove(job_id)
        if job_id in self.running:
            self.running.discard(job_id)
            return True
        return False

    def position(self, job_id: str) -> int:
        """1 for the next job to run; 0 when it is not waiting."""
        try:
            return self.waiting.index(job_id) + 1
        except ValueError:
            return 0
