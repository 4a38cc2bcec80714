"""The caller's credentials, passed through: the gateway holds no token of its own.

A middleware reads the request's `Authorization` (Bearer, or Basic with the token as the
password, for clients that only do Basic: pyhugegraph's user/pwd, http://u:TOKEN@host URLs)
into a context variable; client interceptors on the gateway's gRPC channel send it as
`authorization: Bearer <token>` on the calls made for that request. The server decides.
"""
from __future__ import annotations

import base64
import binascii
import contextvars

import grpc
from aiohttp import web

# What the server receives: "Bearer <token>", or the header as it came if it is not understood
# (the server then answers UNAUTHENTICATED, malformed).
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("taskhub_caller", default="")
REALM = 'Basic realm="taskhub", charset="UTF-8"'
# Set by `taskhub serve --auth`: a request without credentials is answered 401 by the gateway
# itself (in its family's envelope), before any input is looked at.
REQUIRE_CREDENTIALS = web.AppKey("require_credentials", bool)
# In `taskhub serve --auth`: the server's own check of a credential ("Bearer <token>") -> None if
# valid, else why not. Handlers run it before reading any body, so a caller with a bad token
# cannot make the server read (or buffer) a byte of what it sends.
AUTHENTICATE = web.AppKey("authenticate", object)
# Request key set by gateway/fate_auth.check for a FATE-signed multipart request whose signature
# covers fields the handler has yet to read (gateway/fate_auth.verify_form); no credential until then.
SIGNATURE_PENDING = "fate-signature-pending"
NO_CREDENTIALS = ("this server requires a token: send 'Authorization: Bearer <token>',"
                  " or HTTP Basic with the token as the password")


def authorization_of(header: str) -> str:
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return f"Bearer {value}"
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "malformed Basic credentials"
        token = password or user   # the token is the password; a lone user name is taken as the token
        return f"Bearer {token}" if token else "malformed Basic credentials"
    return header.strip()


def refusal(request: web.Request) -> str | None:
    """Why this request's credentials are refused before its body is read (None: go on).
    Missing ones when the server requires them; bad ones when the server's check is at hand."""
    caller = CALLER.get()
    if request.get(SIGNATURE_PENDING) is not None:
        return None   # a signed multipart upload: its handler verifies the signature before the file
    if not caller:
        return NO_CREDENTIALS if request.app.get(REQUIRE_CREDENTIALS) else None
    check = request.app.get(AUTHENTICATE)
    return check(caller) if check is not None else None


@web.middleware
async def pass_credentials(request: web.Request, handler):
    header = request.headers.get("Authorization", "")
    CALLER.set(authorization_of(header) if header else "")
    resp = await handler(request)
    if resp is not None and resp.status == 401 and not resp.prepared:
        resp.headers["WWW-Authenticate"] = REALM
    return resp


def _with_caller(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    caller = CALLER.get()
    if not caller:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", caller)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                      details.wait_for_ready)


class _Unary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(_with_caller(details), request)


class _Stream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(_with_caller(details), request)


class _Upload(grpc.aio.StreamUnaryClientInterceptor):
    """Client streaming (FlowService.UploadData from the fate family)."""

    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await continuation(_with_caller(details), request_iterator)


def interceptors() -> list:
    return [_Unary(), _Stream(), _Upload()]
