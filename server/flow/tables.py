"""Tables: rows of delimited text stored in chunks, written once, read as a stream.

A table is (namespace, name) with a count, partitions (kept as FATE gave them) and a schema
(`sid`, `header`: the columns after the id, ...). Its rows are text lines "sid,v1,v2,..."
stored in chunks of up to CHUNK_ROWS lines, so a million-row table is a few hundred rows of
SQLite. A table becomes visible when its description is committed, after all its chunks.
"""
from __future__ import annotations

import codecs
import json
from typing import AsyncIterator, Iterator

from .. import errors
from . import names
from ..model import now_ms
from .store import FlowStore

CHUNK_ROWS = 10_000


def check_name(namespace: str, name: str) -> None:
    names.check_name(namespace, "namespace")
    names.check_name(name, "table_name")


class TableWriter:
    """Writes one table through the store's writer; `finish()` makes it visible."""

    def __init__(self, fstore: FlowStore, namespace: str, name: str, schema: dict, partitions: int = 1,
                 owner: tuple[str, str, str, int, str] = ("", "", "", 0, "")):
        check_name(namespace, name)
        self.fstore, self.namespace, self.name = fstore, namespace, name
        self.schema, self.partitions, self.owner = schema, partitions, owner
        self.count = 0
        self._seq = 0
        self._buf: list[str] = []
        fstore.drop_table(namespace, name)

    def add(self, lines: list[str]) -> None:
        self._buf.extend(lines)
        self.count += len(lines)
        if len(self._buf) >= CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        for i in range(0, len(self._buf), CHUNK_ROWS):
            part = self._buf[i:i + CHUNK_ROWS]
            self.fstore.append_chunk(self.namespace, self.name, self._seq, len(part), "\n".join(part))
            self._seq += 1
        self._buf = []

    async def finish(self) -> dict:
        self._flush()
        job_id, component, role, party_id, output_name = self.owner
        info = {"namespace": self.namespace, "name": self.name, "count": self.count, "partitions": self.partitions,
                "schema_json": json.dumps(self.schema), "job_id": job_id, "component": component, "role": role,
                "party_id": party_id, "output_name": output_name, "create_time_ms": now_ms()}
        await self.fstore.describe_table(info)
        return info

    def abort(self) -> None:
        self._buf = []
        self.fstore.drop_table(self.namespace, self.name)


def read_lines(fstore: FlowStore, namespace: str, name: str, limit: int = -1) -> Iterator[list[str]]:
    """The table's rows in batches (one stored chunk each), at most `limit` rows (negative: all)."""
    left = limit if limit and limit > 0 else -1
    for data in fstore.table_chunks(namespace, name):
        lines = data.split("\n") if data else []
        if left >= 0:
            lines = lines[:left]
            left -= len(lines)
        if lines:
            yield lines
        if left == 0:
            return


class CsvIngest:
    """Turns a CSV byte stream into table rows: header (when `head`), delimiter, column checks.

    FATE's upload conf: head (1: the first line names the columns, the first being the id),
    delimiter (default ","). A line with a different number of columns than the first is an
    error that names the line.
    """

    def __init__(self, writer: TableWriter, head: bool, delimiter: str = ","):
        if not delimiter or "\n" in delimiter:
            raise errors.InvalidArgument("delimiter must be a non-empty string without newlines")
        self.writer, self.head, self.delimiter = writer, head, delimiter
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._carry = ""
        self._columns = -1
        self._line_no = 0
        self.header: list[str] | None = None

    def feed(self, data: bytes, final: bool = False) -> None:
        try:
            text = self._carry + self._decoder.decode(data, final)
        except UnicodeDecodeError as e:
            raise errors.InvalidArgument(f"the file is not UTF-8 text near line {self._line_no + 1}: {e.reason}") from None
        lines = text.split("\n")
        self._carry = "" if final else lines.pop()
        if lines and lines[-1] == "" and final:
            lines.pop()
        self._take(lines)

    def _take(self, lines: list[str]) -> None:
        out = []
        d = self.delimiter
        for line in lines:
            self._line_no += 1
            if line.endswith("\r"):
                line = line[:-1]
            if not line.strip():
                continue
            if self.head and self.header is None:
                self.header = [c.strip() for c in line.split(d)]
                self._columns = len(self.header) - 1
                if self._columns < 0 or not self.header[0]:
                    raise errors.InvalidArgument("the header line is empty; it must name the id column first")
                continue
            n = line.count(d)
            if self._columns < 0:
                self._columns = n
            elif n != self._columns:
                raise errors.InvalidArgument(
                    f"line {self._line_no} has {n + 1} columns but the {'header' if self.head else 'first line'} has"
                    f" {self._columns + 1}; fix the file (or its delimiter {d!r}) and upload again")
            out.append(line if d == "," else line.replace(d, ","))
        if out:
            self.writer.add(out)

    def schema(self) -> dict:
        if self.header is not None:
            return {"sid": self.header[0], "header": self.header[1:]}
        return {"sid": "id", "header": [f"x{i}" for i in range(max(self._columns, 0))]}


async def aiter_lines(it: Iterator[list[str]], loop) -> AsyncIterator[list[str]]:
    """Run a blocking batch iterator in a thread, one batch at a time."""
    sentinel = object()
    while True:
        batch = await loop.run_in_executor(None, next, it, sentinel)
        if batch is sentinel:
            return
        yield batch
