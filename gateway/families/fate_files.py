"""tar.gz answers of the fate family (job logs, component output data), built on disk.

Members are written to a temporary directory as the gRPC streams arrive (never whole in memory),
packed in a worker thread, then sent in chunks; the directory is removed when the answer is done.
"""
from __future__ import annotations

import asyncio
import os
import tarfile
import tempfile
from pathlib import Path

from aiohttp import web

CHUNK = 1 << 20


class TarDraft:
    """A temporary directory whose files become one tar.gz answer."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="taskhub-fate-")
        self.root = Path(self._dir.name) / "members"
        self.root.mkdir()
        self._open: dict[str, object] = {}

    def append(self, name: str, text: str) -> None:
        """Add a line to member `name` (opened on first use)."""
        f = self._open.get(name)
        if f is None:
            path = (self.root / name).resolve()
            if not path.is_relative_to(self.root.resolve()) or ".." in Path(name).parts or Path(name).is_absolute():
                raise ValueError(f"refusing tar member {name!r}: it would leave the archive's directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._open[name] = open(path, "w", encoding="utf-8")
        f.write(text + "\n")

    def members(self) -> list[str]:
        return sorted(self._open)

    def _pack(self) -> Path:
        for f in self._open.values():
            f.close()
        target = Path(self._dir.name) / "answer.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            for name in sorted(self._open):
                tar.add(self.root / name, arcname=name)
        return target

    async def send(self, request: web.Request, filename: str) -> web.StreamResponse:
        try:
            path = await asyncio.to_thread(self._pack)
            resp = web.StreamResponse(headers={
                "Content-Type": "application/gzip",
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Content-Length": str(os.path.getsize(path)),
            })
            await resp.prepare(request)
            with open(path, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            self.close()

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._dir.cleanup()
