"""Streamed uploads: a multipart file part goes to a client-streaming RPC chunk by chunk, never
whole in memory, and is refused as soon as it passes the upload limit (--max-upload-mb)."""
from __future__ import annotations

import asyncio
from typing import Callable

import grpc
from aiohttp import web

from .errors import BadRequest

CHUNK = 1 << 20
MAX_UPLOAD = 1 << 30   # a streamed upload (data/upload, model/import); --max-upload-mb
MAX_UPLOAD_KEY = web.AppKey("max_upload", int)
MAX_FIELD = 64 << 10   # a text field of a multipart upload (ids, flags): read whole, so kept small


def limit_of(request: web.Request) -> int:
    return request.app.get(MAX_UPLOAD_KEY, MAX_UPLOAD)


def too_large(limit: int, what: str) -> BadRequest:
    return BadRequest(f"{what} is larger than this server's upload limit of {limit / (1 << 20):g} MiB"
                      " (taskhub serve --max-upload-mb)", grpc.StatusCode.RESOURCE_EXHAUSTED)


async def text_field(part) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(8192):
        data += chunk
        if len(data) > MAX_FIELD:
            raise BadRequest(f"multipart field {part.name!r} is longer than {MAX_FIELD} bytes")
    return data.decode("utf-8", "replace")


async def chunks_of(part, limit: int, what: str):
    """The part's bytes in pieces of about CHUNK; BadRequest (RESOURCE_EXHAUSTED) past `limit`."""
    size, buffer = 0, bytearray()
    while chunk := await part.read_chunk(CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large(limit, what)
        buffer += chunk
        if len(buffer) >= CHUNK:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


async def send_stream(call, first, part, wrap: Callable[[bytes], object], limit: int, what: str):
    """`first`, then the part's bytes as wrap(chunk) messages, on a client-streaming call; its answer.
    Past the limit the call is cancelled and the caller gets RESOURCE_EXHAUSTED; an error the server
    answered early (its status) wins over a failed write."""
    try:
        await call.write(first)
        if part is not None:
            async for data in chunks_of(part, limit, what):
                await call.write(wrap(data))
        await call.done_writing()
    except BadRequest:
        call.cancel()
        raise
    # The server ended the call first (it refused the upload at its first message, say): a write then
    # fails, with InvalidStateError ("RPC already finished") through a channel with interceptors.
    except (grpc.aio.AioRpcError, ConnectionError, RuntimeError, asyncio.InvalidStateError) as e:
        if not call.done():
            call.cancel()
            raise BadRequest(f"the upload stopped: {e}", grpc.StatusCode.ABORTED) from None
    return await call
