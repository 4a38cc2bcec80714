"""The pool of warm Python workers (server/node/pool.py) with real worker processes: jobs of a
callable seen to be short are held by busy workers, several per write, and still start one at a
time, in order; a held job is dropped by a cancel before it starts; a dying worker gives back
what it held; nothing waits behind a job not known to be short, nor long behind one that runs long."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest

from server.node.pool import RELEASE_SECONDS, SHORT_SECONDS, PythonPool

from conftest import slack

CALLABLES = '''
import os, time

def quick(tag=""):
    print(f"ran {tag}")
    return tag

def gate(path):
    while not os.path.exists(path):
        time.sleep(0.005)
'''


class Recorder:
    """The pool's callbacks, in the order they came, and a way to wait for them."""

    def __init__(self):
        self.log: list[tuple] = []
        self.lines: dict[int, list[str]] = {}
        self.changed = asyncio.Event()

    def on_start(self, task_id, pid):
        self._add(("start", task_id, pid))

    def on_done(self, task_id, outcome, error, result):
        self._add(("done", task_id, outcome, error))

    def on_log(self, task_id, lines):
        self.lines.setdefault(task_id, []).extend(text for _, text in lines)

    def on_progress(self, *_):
        pass

    on_result = on_response = on_progress

    def _add(self, entry):
        self.log.append(entry)
        self.changed.set()

    def done(self, task_id):
        return next((e for e in self.log if e[0] == "done" and e[1] == task_id), None)

    def started(self, task_id):
        return next((e for e in self.log if e[0] == "start" and e[1] == task_id), None)

    async def until(self, predicate, what: str, timeout: float = 20.0):
        async def wait():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(wait(), timeout * slack())
        except asyncio.TimeoutError:
            pytest.fail(f"waited for {what}; the pool told: {self.log}")


def job(task_id: int, fn: str, arg: str = "") -> tuple:
    data = "" if not arg else ('{"tag": "%s"}' % arg if fn == "quick" else '{"path": "%s"}' % arg)
    return ("run", task_id, f"uid-{task_id}", "default", f"t{task_id}", f"poolcalls:{fn}", data, {})


def run_pool(tmp_path, size: int, body):
    (tmp_path / "poolcalls.py").write_text(CALLABLES)

    async def main():
        rec = Recorder()
        pool = PythonPool(size, rec, rec.on_start, [str(tmp_path)])
        pool.on_done = rec.on_done
        await pool.start()
        try:
            await body(pool, rec)
        finally:
            await pool.close()
    asyncio.run(main())


async def learn(pool, rec, task_id: int, fn: str, arg: str) -> None:
    """Run jobs of `fn` (ids from task_id * 100) until the pool knows it is short: on a loaded
    machine one run may take longer than SHORT_SECONDS, and the next ones bring the estimate down."""
    for i in range(task_id * 100, task_id * 100 + 50):
        pool.submit(job(i, fn, arg))
        await rec.until(lambda: rec.done(i), f"job {i}")
        if pool._short(job(0, fn, arg)):
            return
    pytest.fail(f"{fn} never ran within {SHORT_SECONDS}s: {pool.runtime}")


async def learn_both(pool, rec, tmp_path) -> None:
    """The pool knows both callables short: quick, and gate (given a file that exists)."""
    await learn(pool, rec, 1, "quick", "warm")
    (tmp_path / "open").write_text("")
    await learn(pool, rec, 2, "gate", str(tmp_path / "open"))


def test_short_jobs_are_held_several_per_write_and_start_one_after_another(tmp_path):
    async def body(pool, rec):
        await learn_both(pool, rec, tmp_path)
        closed = tmp_path / "closed"
        pool.submit(job(3, "gate", str(closed)))  # the worker is busy until the file exists
        held = pool.held_limit(job(0, "quick"))  # about HOLD_SECONDS of them
        assert held > 1, pool.runtime
        ids = list(range(10, 10 + held + 3))
        for i in ids:
            pool.submit(job(i, "quick", str(i)))
        await asyncio.sleep(0)  # the pool fills held slots once per loop turn
        [worker] = pool.workers
        assert list(worker.jobs) == [3, *ids[:held]], "the busy worker holds short jobs"
        assert list(pool.waiting) == ids[held:]
        assert not any(rec.started(i) for i in ids), "a held job is not started before it runs"
        closed.write_text("")
        await rec.until(lambda: all(rec.done(i) for i in ids), "every quick job")
        for i in ids:
            assert rec.done(i)[2] == "success" and rec.lines[i] == [f"ran {i}"]
        order = [e for e in rec.log if e[1] in [3, *ids]]
        assert order == [e for i in [3, *ids] for e in (rec.started(i), rec.done(i))], \
            "each job starts once the one before it has ended, in the order submitted"
    run_pool(tmp_path, 1, body)


def test_the_pool_says_how_many_more_short_jobs_it_would_hold(tmp_path):
    """What lets the node place short tasks beyond its slots (LocalNode.holds): room behind short
    running jobs, less what already waits; none for a callable not seen short, nor behind a long job."""
    async def body(pool, rec):
        await learn_both(pool, rec, tmp_path)
        held = pool.held_limit(job(0, "quick"))
        assert pool.spare("poolcalls:quick") == 1 + held, "an idle worker takes one and holds the rest"
        assert pool.spare("poolcalls:never_seen") == 0
        pool.submit(job(3, "gate", str(tmp_path / "closed")))
        assert pool.spare("poolcalls:quick") == held
        ids = list(range(10, 10 + held + 2))
        for i in ids:
            pool.submit(job(i, "quick", str(i)))
        assert pool.spare("poolcalls:quick") == -2
        await asyncio.sleep(0)
        assert len(pool.workers[0].jobs) == 1 + held and pool.spare("poolcalls:quick") == -2
        async def seen_long():  # the pool's sweep tells nobody: look at it as often as it looks
            while pool._short(job(0, "gate")):
                await asyncio.sleep(RELEASE_SECONDS / 2)
        await asyncio.wait_for(seen_long(), 20 * slack())
        assert pool.spare("poolcalls:quick") == -len(pool.waiting) < 0, "nothing more waits behind a long job"
        (tmp_path / "closed").write_text("")
        await rec.until(lambda: all(rec.done(i) for i in ids), "every quick job")
    run_pool(tmp_path, 1, body)


def test_a_held_job_cancelled_is_dropped_and_never_runs(tmp_path):
    async def body(pool, rec):
        await learn_both(pool, rec, tmp_path)
        closed = tmp_path / "closed"
        pool.submit(job(3, "gate", str(closed)))
        pool.submit(job(4, "quick", "dropped"))
        pool.submit(job(5, "quick", "kept"))
        await asyncio.sleep(0)
        assert list(pool.workers[0].jobs) == [3, 4, 5]
        assert pool.cancel(4) == "dropped"
        assert pool.cancel(3) == "told"  # running: the worker is told (the gate does not listen)
        closed.write_text("")
        await rec.until(lambda: rec.done(5), "the job after the dropped one")
        assert rec.done(5)[2] == "success" and rec.lines[5] == ["ran kept"]
        assert rec.started(4) is None and rec.done(4) is None and 4 not in rec.lines
    run_pool(tmp_path, 1, body)


def test_a_dying_worker_gives_back_the_jobs_it_held(tmp_path):
    async def body(pool, rec):
        await learn_both(pool, rec, tmp_path)
        pool.submit(job(3, "gate", str(tmp_path / "never")))
        pool.submit(job(4, "quick", "a"))
        pool.submit(job(5, "quick", "b"))
        await asyncio.sleep(0)
        [worker] = pool.workers
        assert list(worker.jobs) == [3, 4, 5]
        os.kill(worker.pid, signal.SIGKILL)
        await rec.until(lambda: rec.done(4) and rec.done(5), "the held jobs, on a new worker")
        assert rec.done(3)[2] == "failed" and "died" in rec.done(3)[3]
        assert [rec.done(i)[2] for i in (4, 5)] == ["success", "success"]
        assert rec.started(4)[2] != worker.pid and [e[1] for e in rec.log if e[1] in (4, 5)] == [4, 4, 5, 5]
    run_pool(tmp_path, 1, body)


def test_nothing_waits_behind_a_job_not_known_to_be_short(tmp_path):
    async def body(pool, rec):
        await learn(pool, rec, 1, "quick", "warm")
        closed = tmp_path / "closed"
        pool.submit(job(2, "gate", str(closed)))  # never seen: not known to be short
        [slow] = [w for w in pool.workers if w.jobs]
        ids = list(range(10, 40))
        for i in ids:
            pool.submit(job(i, "quick", str(i)))
        await rec.until(lambda: all(rec.done(i) for i in ids), "the quick jobs, beside the gate")
        assert all(rec.started(i)[2] != slow.pid for i in ids)
        assert rec.done(2) is None
        await asyncio.sleep(5 * SHORT_SECONDS)  # the gate's run is then long by any clock
        closed.write_text("")
        await rec.until(lambda: rec.done(2), "the gate")
        assert not pool._short(job(0, "gate", "")), "a job seen to take long is not held"
    run_pool(tmp_path, 2, body)


def test_held_jobs_go_back_when_the_job_before_them_runs_long(tmp_path):
    """A callable seen short may run long this time (it waits on another task, which may be held
    right behind it): past RELEASE_SECONDS its worker gives back what it holds, never started,
    and another worker runs it."""
    async def body(pool, rec):
        await learn_both(pool, rec, tmp_path)
        pool.submit(job(3, "gate", str(tmp_path / "a")))  # on one worker until its file exists
        pool.submit(job(4, "gate", str(tmp_path / "b")))  # on the other
        ids = list(range(10, 20))
        for i in ids:
            pool.submit(job(i, "quick", str(i)))
        await asyncio.sleep(0)
        a, b = pool.busy[3], pool.busy[4]
        behind_a = [i for i in a.jobs if i != 3]
        assert behind_a and all(i in a.jobs or i in b.jobs for i in ids), "the quick jobs are held by both"
        (tmp_path / "b").write_text("")
        await rec.until(lambda: all(rec.done(i) for i in ids), "every quick job, the ones held by the long gate too")
        assert rec.done(3) is None, "the first gate still runs"
        assert all(rec.started(i)[2] == b.pid for i in behind_a) and all(rec.lines[i] == [f"ran {i}"] for i in ids)
        assert pool.runtime["poolcalls:gate"] >= RELEASE_SECONDS and not pool._short(job(0, "gate"))
        (tmp_path / "a").write_text("")
        await rec.until(lambda: rec.done(3), "the first gate")
        assert [rec.done(i)[2] for i in (3, 4)] == ["success", "success"]
    run_pool(tmp_path, 2, body)
