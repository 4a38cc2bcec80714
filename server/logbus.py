"""Per-task logs: numbering, batching to the store, and fan-out to live readers.

A running task's recent lines stay in memory; readers that fall behind read the store.
Appending never waits for a reader, so a slow reader cannot slow a task. Readers are woken
through `news` (server/broadcast.py), keyed by task id: by this server's appends and ends, and on
a follower server by the store's notifications (server/cluster.py), so one read() serves both.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

from .broadcast import Broadcaster
from .model import LogStream, now_ms
from .storage import Store

# Lines kept in memory per live task beyond what the store already has.
KEEP_IN_MEMORY = 20_000
READ_BATCH = 4_000
# A waiting reader reads the store again after this long even if nobody woke it: a follower's
# notification may be lost while its database connection is re-made.
RECHECK_SECONDS = 5.0
MAX_LINES = 1_000_000  # per task, by default; output beyond is dropped after one marker line


class TaskLog:
    __slots__ = ("task_id", "base", "lines", "next_seq", "committed", "ended", "truncated", "cursor")

    def __init__(self, task_id: int, next_seq: int):
        self.task_id = task_id
        self.base = next_seq          # seq of lines[0]
        self.lines: list[tuple] = []  # (seq, time_ms, stream, text)
        self.next_seq = next_seq
        self.committed = next_seq     # every seq below this is in the store
        self.ended = False
        self.truncated = False        # the cap was reached: only system lines are kept
        self.cursor: tuple[int, int] | None = None  # (attempt, next line) of lines numbered by an agent

    def trim(self) -> None:
        drop = min(self.committed, self.next_seq - KEEP_IN_MEMORY) - self.base
        if drop > KEEP_IN_MEMORY // 4:
            del self.lines[:drop]
            self.base += drop


class LogBus:
    def __init__(self, store: Store, max_lines: int = MAX_LINES):
        self.store = store
        self.max_lines = max_lines
        self.live: dict[int, TaskLog] = {}
        self._pending: list[tuple] = []
        self._cursors: dict[int, str] = {}
        self._flush_scheduled = False
        self._empty: set[int] = set()  # tasks known to have no stored line yet (created by this process)
        self.news = Broadcaster()      # task id -> readers to wake (a line, or the end)
        # Several servers (server/cluster.py): readers get committed lines only, so a reader that
        # resumes on another server after this one died finds every line it saw, under the same seq.
        self.committed_only = False
        store.writer.on_logs_committed = self._committed

    def known_empty(self, task_id: int) -> None:
        """The task was just created: its first line is 0, no need to ask the store."""
        self._empty.add(task_id)

    def open(self, task_id: int) -> TaskLog:
        """The live log of a task that is (about to be) running."""
        tl = self.live.get(task_id)
        if tl is None:
            start = 0 if task_id in self._empty else self.store.log_length(task_id)
            self._empty.discard(task_id)
            tl = self.live[task_id] = TaskLog(task_id, start)
            tl.truncated = start > self.max_lines
        return tl

    def append(self, task_id: int, entries: list[tuple[int, str]], numbered: tuple[int, int] | None = None) -> None:
        """entries: (stream, text) pairs, in the order the task wrote them.

        numbered: (attempt, first line) when the sender numbers its lines (an agent, which
        re-sends recent lines after a reconnect): lines already kept are skipped, and a hole
        (lines that never arrived) gets a marker line, so each attempt's log stays in order.
        """
        tl = self.live.get(task_id) or self.open(task_id)
        if numbered is not None:
            entries = self._renumbered(tl, entries, *numbered)
            if not entries:
                return
        room = self.max_lines - tl.next_seq
        if len(entries) > room and not (len(entries) == 1 and entries[0][0] == LogStream.SYSTEM):
            if tl.truncated:
                return
            tl.truncated = True
            entries = entries[:max(0, room)] + [(int(LogStream.SYSTEM), (
                f"[taskhub: log truncated: this task wrote more than {self.max_lines} lines;"
                " the rest of its output is dropped (--max-log-lines)]"))]
        ts = now_ms()
        seq = tl.next_seq
        rows = [(seq + i, ts, stream, text) for i, (stream, text) in enumerate(entries)]
        tl.lines.extend(rows)
        tl.next_seq += len(rows)
        self._pending.extend((task_id,) + r for r in rows)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if task_id in self.news.topics:
            self.news.publish(task_id)

    def _renumbered(self, tl: TaskLog, entries: list, attempt: int, first: int) -> list:
        if tl.cursor is None:
            tl.cursor = (0, 0) if tl.task_id in self._empty or tl.next_seq == 0 else \
                (self.store.log_cursor(tl.task_id) or (0, 0))
        have_attempt, have = tl.cursor
        end = first + len(entries)
        if attempt < have_attempt:
            return []  # an older attempt's lines (the node refuses those already)
        if attempt > have_attempt:
            have = 0
        skip = have - first
        if skip >= len(entries):
            return []
        if skip > 0:
            entries = entries[skip:]
        elif skip < 0:
            entries = [(int(LogStream.SYSTEM), f"[taskhub: {-skip} log lines of attempt {attempt} were lost]")] + entries
        tl.cursor = (attempt, end)
        self._cursors[tl.task_id] = f"{tl.cursor[0]}:{tl.cursor[1]}"
        return entries

    def system(self, task_id: int, text: str) -> None:
        self.append(task_id, [(int(LogStream.SYSTEM), text)])

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            rows, self._pending = self._pending, []
            cursors, self._cursors = self._cursors, {}
            with self.store.batch() as b:
                b.append_logs(rows, [(c, t) for t, c in cursors.items()])

    def flush(self) -> None:
        """Hand pending lines to the writer now (before a task's end is: readers elsewhere see its
        last lines committed no later than its end)."""
        if self._pending:
            self._flush()

    def _committed(self, upto: dict[int, int]) -> None:
        for task_id, seq in upto.items():
            tl = self.live.get(task_id)
            if tl is not None:
                tl.committed = max(tl.committed, seq + 1)
                tl.trim()
                if tl.ended and tl.committed >= tl.next_seq:
                    del self.live[task_id]
                elif not self.committed_only:
                    continue
                self.changed(task_id)

    def end(self, task_id: int) -> None:
        """The task ended: no more lines will come. Readers finish once they caught up."""
        self._empty.discard(task_id)
        tl = self.live.get(task_id)
        if tl is not None:
            tl.ended = True
            if tl.committed >= tl.next_seq:
                del self.live[task_id]
        self.changed(task_id)

    def forget(self, task_id: int) -> None:
        self._empty.discard(task_id)
        tl = self.live.pop(task_id, None)
        if tl is not None:
            tl.ended = True
        self.changed(task_id)

    def changed(self, task_id: int) -> None:
        """Wake the task's readers (a line or its end, here; on a follower, told by the store)."""
        if task_id in self.news.topics:
            self.news.publish(task_id)

    async def read(self, task_id: int, offset: int, follow: bool, is_done) -> AsyncIterator[list[tuple]]:
        """Yield batches of (seq, time_ms, stream, text) from `offset` on, without gaps.

        `await is_done()` tells whether the task has ended; with `follow` the iterator runs
        until the task ended and every line was yielded. A task this server does not run (a
        follower's) is read from the store, woken as its lines are committed.
        """
        pos = max(0, offset)
        loop = asyncio.get_running_loop()
        # Subscribed before anything is read: a line or end told while the store is read is kept.
        with self.news.subscribe(task_id, limit=1) as woken:
            while True:
                woken.clear()
                tl = self.live.get(task_id)
                if tl is not None and pos >= tl.base:
                    end = tl.committed if self.committed_only else tl.next_seq
                    if pos < end:
                        batch = tl.lines[pos - tl.base: min(end, pos + READ_BATCH) - tl.base]
                        pos += len(batch)
                        yield batch
                        continue
                    if not follow or (tl.ended and pos >= tl.next_seq):
                        return
                    await woken.wait()
                    continue
                # Not in memory: what the store has (the task ended, runs elsewhere, or this reader is behind).
                rows = await loop.run_in_executor(None, self.store.read_logs, task_id, pos, READ_BATCH)
                if rows:
                    pos += len(rows)
                    yield [tuple(r) for r in rows]
                    continue
                tl = self.live.get(task_id)
                if tl is not None:
                    if pos < tl.base:  # cannot happen: lines below base are committed
                        raise RuntimeError(f"log of task {task_id} has a gap at {pos}")
                    continue
                if not follow or await is_done():
                    # The task may have run and its lines been committed (and dropped from memory)
                    # while the store was being read above: one more read before saying it is all.
                    rows = await loop.run_in_executor(None, self.store.read_logs, task_id, pos, READ_BATCH)
                    if not rows:
                        return
                    pos += len(rows)
                    yield [tuple(r) for r in rows]
                    continue
                # Not started yet, or run elsewhere: wait for a line (or the end).
                await woken.wait(RECHECK_SECONDS)
