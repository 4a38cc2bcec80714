"""FATE Flow request signing, verified by gateway/fate_auth.py against the real flow_sdk
FlowClient(..., app_key=, secret_key=) over real HTTP (a tiny aiohttp route in a thread)."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
import requests
from aiohttp import web

from gateway import fate_auth
from gateway.credentials import CALLER, REQUIRE_CREDENTIALS, pass_credentials
from gateway.fate_auth import AUTHENTICATION_ERROR, FateVerifier, verify_request

flow_sdk = pytest.importorskip("flow_sdk.client")
APP_KEY, SECRET = "a1b2c3d4", "thf_a1b2c3d4_s3cret"


class SignedRoute:
    """POST/GET /v1/{path}: answers retcode 0 with the app key if the request is signed right,
    else the verifier's refusal (FATE's envelope, HTTP 200 as FATE does). Keeps the last request."""

    def __init__(self):
        self.verifier = FateVerifier(lambda key: SECRET if key == APP_KEY else None, window_seconds=60)
        self.last: dict = {}
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        assert ready.wait(30)

    async def handle(self, request: web.Request) -> web.Response:
        self.last = {"path": request.raw_path, "headers": dict(request.headers), "body": await request.read()}
        verdict = await verify_request(self.verifier, request)
        if isinstance(verdict, str):
            return web.json_response({"retcode": 0, "retmsg": "success", "data": {"app_key": verdict}})
        return web.json_response(verdict.envelope())

    async def guarded(self, request: web.Request) -> web.Response:
        """How a FATE family handler uses fate_auth.check: the credential it forwards, or the refusal."""
        refusal = await fate_auth.check(request)
        if refusal is not None:
            return web.json_response(refusal)
        return web.json_response({"retcode": 0, "retmsg": "success", "data": {"forwarded": CALLER.get()}})

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application(middlewares=[pass_credentials])
        app[fate_auth.VERIFIER] = self.verifier
        app[REQUIRE_CREDENTIALS] = True
        app.router.add_route("*", "/v1/{path:.*}", self.handle)
        app.router.add_route("*", "/v2/{path:.*}", self.guarded)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def route():
    r = SignedRoute()
    yield r
    r.close()


def client(route, app_key=APP_KEY, secret_key=SECRET):
    return flow_sdk.FlowClient("127.0.0.1", route.port, "v1", app_key=app_key, secret_key=secret_key)


def test_signed_json_and_form_requests_pass(route):
    c = client(route)
    assert c.job.query(job_id="202601010000001") ["data"] == {"app_key": APP_KEY}
    # Form data is signed as its sorted, URL-encoded fields.
    answer = c._handle_result(c.post("data/upload/history", data={"limit": 3, "job_id": "x y/z"}))
    assert answer["retcode"] == 0, answer
    # An empty JSON object is sent but not signed (flow_sdk signs a truthy json= only).
    answer = c._handle_result(c.post("job/list/job", json={}))
    assert answer["retcode"] == 0, answer
    # Signing covers the query string too.
    answer = c._handle_result(c.get("tracking/component/output/data/download?job_id=1&role=guest"))
    assert answer["retcode"] == 0, answer


def test_bad_signature_unknown_key_and_unsigned_are_refused(route):
    answer = client(route, secret_key="thf_a1b2c3d4_wrong").job.query(job_id="1")
    assert answer["retcode"] == AUTHENTICATION_ERROR and "signature" in answer["retmsg"]
    answer = client(route, app_key="nobody").job.query(job_id="1")
    assert answer["retcode"] == AUTHENTICATION_ERROR and "APP_KEY" in answer["retmsg"]
    answer = flow_sdk.FlowClient("127.0.0.1", route.port, "v1").job.query(job_id="1")
    assert answer["retcode"] == AUTHENTICATION_ERROR and "missing header" in answer["retmsg"]


def test_a_tampered_body_is_refused(route):
    client(route).job.query(job_id="1")
    sent = route.last
    answer = requests.post(f"http://127.0.0.1:{route.port}{sent['path']}", data=sent["body"].replace(b'"1"', b'"2"'),
                           headers={k: v for k, v in sent["headers"].items() if k.lower() != "content-length"},
                           timeout=10).json()
    assert answer["retcode"] == AUTHENTICATION_ERROR and "signature" in answer["retmsg"]


def test_a_replayed_nonce_is_refused(route):
    assert client(route).job.query(job_id="1")["retcode"] == 0
    sent = route.last
    answer = requests.post(f"http://127.0.0.1:{route.port}{sent['path']}", data=sent["body"],
                           headers={k: v for k, v in sent["headers"].items() if k.lower() != "content-length"},
                           timeout=10).json()
    assert answer["retcode"] == AUTHENTICATION_ERROR and "replay" in answer["retmsg"]


def test_a_stale_timestamp_is_refused(route):
    route.verifier.clock = lambda: time.time() + 61   # the server's clock is 61 s ahead of the client's
    try:
        answer = client(route).job.query(job_id="1")
    finally:
        route.verifier.clock = time.time
    assert answer["retcode"] == AUTHENTICATION_ERROR and "timestamp" in answer["retmsg"]


def test_check_forwards_the_secret_key_as_the_callers_credential(route):
    signed = flow_sdk.FlowClient("127.0.0.1", route.port, "v2", app_key=APP_KEY, secret_key=SECRET)
    assert signed.job.query(job_id="1")["data"] == {"forwarded": f"Bearer {SECRET}"}
    bad = flow_sdk.FlowClient("127.0.0.1", route.port, "v2", app_key=APP_KEY, secret_key="nope")
    assert bad.job.query(job_id="1")["retcode"] == AUTHENTICATION_ERROR
    unsigned = flow_sdk.FlowClient("127.0.0.1", route.port, "v2")
    answer = unsigned.job.query(job_id="1")
    assert answer["retcode"] == AUTHENTICATION_ERROR and "authentication required" in answer["retmsg"]
    # A bearer token instead of signing goes on as it is (the server decides).
    r = requests.post(f"http://127.0.0.1:{route.port}/v2/job/query", json={}, headers={"Authorization": "Bearer t"},
                      timeout=10).json()
    assert r["data"] == {"forwarded": "Bearer t"}
