"""FATE Flow request signing (FlowClient(..., app_key=, secret_key=)), verified.

flow_sdk signs each request with HMAC-SHA1 under secret_key and sends headers TIMESTAMP (ms),
NONCE, APP_KEY and SIGNATURE = base64(HMAC(secret_key, message)), where message is, joined by
newlines: the timestamp, the nonce, the app key, the path with its query, the body if it was
sent as JSON (else empty), and the form fields sorted and URL-encoded if it sent form data
(else empty). A request is refused with FATE's authentication retcode (109) when a header is
missing, the app key is unknown, the signature does not match, the timestamp is outside the
window, or the nonce was seen within it (a replay).

In taskhub an app key is a token's id and its secret key is the token's FATE secret (printed
by `taskhub token create`; `Authority.fate_secret`), which is also a bearer credential the
server accepts for that token: after verifying, the gateway forwards it (gateway/credentials).
"""
from __future__ import annotations

import base64
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping
from urllib.parse import quote, urlencode

from aiohttp import web

from .credentials import CALLER, REQUIRE_CREDENTIALS, SIGNATURE_PENDING

AUTHENTICATION_ERROR = 109
HEADERS = ("TIMESTAMP", "NONCE", "APP_KEY", "SIGNATURE")


@dataclass
class Refusal:
    retcode: int
    retmsg: str

    def envelope(self) -> dict:
        return {"retcode": self.retcode, "retmsg": self.retmsg}


def signed_message(timestamp: str, nonce: str, app_key: str, path_url: str, json_body: bytes,
                   form: Mapping[str, str] | None) -> bytes:
    encoded_form = urlencode(sorted(form.items()), quote_via=quote, safe="-._~").encode("ascii") if form else b""
    return b"\n".join([timestamp.encode("ascii"), nonce.encode("ascii"), app_key.encode("ascii"),
                       path_url.encode("ascii"), json_body, encoded_form])


def sign(secret_key: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret_key.encode("ascii"), message, "sha1").digest()).decode("ascii")


@dataclass
class FateVerifier:
    """secret_of(app_key) -> its secret key, or None for an unknown app key."""

    secret_of: Callable[[str], str | None]
    window_seconds: float = 60.0
    clock: Callable[[], float] = time.time
    _nonces: dict[str, float] = field(default_factory=dict)   # nonce -> when it may be forgotten

    def precheck(self, headers: Mapping[str, str]) -> Refusal | None:
        """What can be refused from the headers alone (before any body is read)."""
        missing = [h for h in HEADERS if not headers.get(h)]
        if missing:
            return Refusal(AUTHENTICATION_ERROR, f"authentication failed: missing header(s) {', '.join(missing)}")
        try:
            sent_at = int(headers["TIMESTAMP"]) / 1000
        except ValueError:
            return Refusal(AUTHENTICATION_ERROR, "authentication failed: TIMESTAMP must be milliseconds since the epoch")
        if abs(self.clock() - sent_at) > self.window_seconds:
            return Refusal(AUTHENTICATION_ERROR, f"authentication failed: the request timestamp is more than"
                                                 f" {self.window_seconds:g} s away from the server's clock")
        if self.secret_of(headers["APP_KEY"]) is None:
            return Refusal(AUTHENTICATION_ERROR, f"authentication failed: unknown APP_KEY {headers['APP_KEY']!r}")
        return None

    def verify(self, headers: Mapping[str, str], path_url: str, json_body: bytes = b"",
               form: Mapping[str, str] | None = None) -> Refusal | str:
        """The app key when the request is signed right, else a Refusal (retcode 109)."""
        early = self.precheck(headers)
        if early is not None:
            return early
        timestamp, nonce, app_key, signature = (headers[h] for h in HEADERS)
        now = self.clock()
        secret = self.secret_of(app_key)
        try:
            expected = sign(secret, signed_message(timestamp, nonce, app_key, path_url, json_body, form))
        except UnicodeEncodeError:
            return Refusal(AUTHENTICATION_ERROR, "authentication failed: signed headers must be ASCII")
        if not hmac.compare_digest(expected, signature):
            return Refusal(AUTHENTICATION_ERROR, "authentication failed: the signature does not match")
        self._forget_old(now)
        if nonce in self._nonces:
            return Refusal(AUTHENTICATION_ERROR, "authentication failed: this NONCE was used already (a replay)")
        self._nonces[nonce] = now + 2 * self.window_seconds
        return app_key

    def _forget_old(self, now: float) -> None:
        if len(self._nonces) > 1024:
            self._nonces = {n: t for n, t in self._nonces.items() if t > now}


async def verify_request(verifier: FateVerifier, request) -> Refusal | str:
    """verify() for an aiohttp request: JSON bodies are signed as sent, URL-encoded form fields as
    flow_sdk encodes them."""
    early = verifier.precheck(request.headers)
    if early is not None:
        return early   # nothing of the body read for a request that cannot be right
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        # Its fields are signed when flow_sdk sent a dict with the file (model/import), and none when
        # it sent a MultipartEncoder (data/upload): the handler checks them with verify_form once it
        # has read the fields, before the file. Until then the caller is only an app key.
        return _PENDING
    json_body, form = b"", None
    if ctype == "application/json":
        json_body = await request.read()
        try:
            if not json.loads(json_body or b"null"):
                json_body = b""   # flow_sdk signs the body only when its json= value is truthy ({} is not)
        except ValueError:
            pass                  # not JSON: signed as sent, so a mismatch shows as a bad signature
    elif ctype == "application/x-www-form-urlencoded":
        # multipart is signed without its fields, as flow_sdk signs data/upload (a MultipartEncoder,
        # not a dict), and is never read here: the upload route streams it.
        posted = await request.post()
        form = {k: v for k, v in posted.items() if isinstance(v, str)} or None
    return verifier.verify(request.headers, request.raw_path, json_body, form)


# The verifier of `taskhub serve --auth` (None: FATE signing is not checked, e.g. auth off).
VERIFIER = web.AppKey("fate_verifier", FateVerifier)
_PENDING = object()   # verify_request: a multipart request, checked by verify_form


def verify_form(request, fields: dict[str, str]) -> Refusal | None:
    """For a signed multipart request, once its text fields are read and before its file: None if
    the signature matches (over these fields, or none), else the Refusal. None for unsigned requests."""
    verifier = request.get(SIGNATURE_PENDING)
    if verifier is None:
        return None
    request[SIGNATURE_PENDING] = None
    verdict = verifier.verify(request.headers, request.raw_path, b"", fields or None)
    if isinstance(verdict, Refusal):
        return verdict
    CALLER.set(f"Bearer {verifier.secret_of(verdict)}")
    return None


async def check(request) -> dict | None:
    """For a FATE route handler, first thing: None to go on, or the FATE envelope to answer with.

    A signed request (APP_KEY header) is verified, and its secret key is then forwarded to the
    server as the caller's credential. An unsigned one goes on with whatever Authorization it
    has (Bearer / Basic); when the server requires auth and it has none, it is refused here.
    """
    verifier = request.app.get(VERIFIER)
    if verifier is not None and request.headers.get("APP_KEY"):
        verdict = await verify_request(verifier, request)
        if isinstance(verdict, Refusal):
            return verdict.envelope()
        if verdict is _PENDING:   # the handler must call verify_form before reading the file
            request[SIGNATURE_PENDING] = verifier
            return None
        CALLER.set(f"Bearer {verifier.secret_of(verdict)}")
        return None
    if request.app.get(REQUIRE_CREDENTIALS) and not CALLER.get():
        return Refusal(AUTHENTICATION_ERROR, "authentication required: sign requests with FlowClient(...,"
                                             " app_key=, secret_key=) or send Authorization: Bearer <token>").envelope()
    return None
