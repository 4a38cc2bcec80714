"""Running a seed's examples as written, and checking answers against the documented ones.

A seed shows requests as curl lines (`curl --location --request GET 'http://127.0.0.1:81/...'`)
or as "METHOD URL" lines; `send` runs either as one real HTTP request with the same method,
path, query, headers and body, only the scheme, host and port replaced by the test server's.

A seed shows answers as JSON. `documented(text, **checks)` reads that JSON and marks the
values that are ids or times (which no two runs share) with the type they must have; `match`
then checks an answer field by field: the same keys, equal values, and marked values of
their type.
"""
from __future__ import annotations

import json
import re
import shlex
import urllib.parse

from conftest import HttpAnswer, http


class ByType:
    """A documented value checked by its type (and a pattern), not by equality: ids and times."""

    def __init__(self, kind: type | tuple[type, ...], pattern: str = "", what: str = ""):
        self.kind, self.pattern, self.what = kind, pattern, what or getattr(kind, "__name__", str(kind))

    def check(self, value, path: str) -> None:
        # bool is an int in Python; a documented number never matches true/false.
        assert isinstance(value, self.kind) and not isinstance(value, bool), \
            f"{path}: expected {self.what}, got {value!r}"
        if self.pattern:
            assert re.fullmatch(self.pattern, str(value)), f"{path}: expected {self.what}, got {value!r}"

    def __repr__(self) -> str:
        return f"<{self.what}>"


HEX32 = ByType(str, r"[0-9a-f]{32}", "a 32-hex task id")
UUID = ByType(str, r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "a UUID")
SECONDS = ByType(float, what="a time in seconds (float)")
MILLIS = ByType(int, what="a time in ms (int)")
INT = ByType(int, what="an int")


def documented(text: str, **checks):
    """The seed's JSON, with the values at dotted paths (`data.task_resp.hi.1.time`, written
    `data__task_resp__hi__1__time` as a keyword) replaced: by a ByType for ids and times, or by
    taskhub's own value where README's "Deviations from the seeds" says why it differs."""
    doc = json.loads(text)
    for dotted, check in checks.items():
        *parents, last = dotted.split("__")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key = int(last) if isinstance(node, list) else last
        node[key]  # the path must exist in the seed's JSON: a typo here is a test bug
        node[key] = check
    return doc


def match(actual, expected, path: str = "$") -> None:
    """Field by field: dicts have the same keys, lists the same length, values are equal or of the marked type."""
    if isinstance(expected, ByType):
        expected.check(actual, path)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        assert set(actual) == set(expected), \
            f"{path}: keys differ: missing {sorted(set(expected) - set(actual))}, extra {sorted(set(actual) - set(expected))}"
        for key in expected:
            match(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), \
            f"{path}: expected a list of {len(expected)}, got {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            match(a, e, f"{path}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{path}: expected {expected!r}, got {actual!r}"


def _rebase(url: str, base: str) -> str:
    """The seed's URL with scheme, host and port taken from `base`; path and query untouched."""
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme in ("http", "https") and parts.netloc, f"not an absolute URL: {url!r}"
    target = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))


def parse_curl(line: str) -> tuple[str, str, bytes | None, dict]:
    """`curl [--location] [--request M | -X M] [-H 'K: V'] [-d BODY] URL` -> (method, url, body, headers)."""
    words = shlex.split(line)
    assert words and words[0] == "curl", f"not a curl line: {line!r}"
    method, url, body, headers = "", "", None, {}
    i = 1
    while i < len(words):
        word = words[i]
        if word in ("--location", "-L", "-s", "--silent"):
            pass
        elif word in ("--request", "-X"):
            i += 1
            method = words[i]
        elif word in ("--header", "-H"):
            i += 1
            key, _, value = words[i].partition(":")
            headers[key.strip()] = value.strip()
        elif word in ("--data", "--data-raw", "-d"):
            i += 1
            body = words[i].encode()
        elif word.startswith("-"):
            raise AssertionError(f"curl option {word!r} is not understood by this test helper")
        else:
            assert not url, f"two URLs in {line!r}"
            url = word
        i += 1
    return method or ("POST" if body is not None else "GET"), url, body, headers


def send(base: str, example: str, body: str | bytes | None = None, headers: dict | None = None) -> HttpAnswer:
    """Run one example request against the server at `base`: a curl line, or "METHOD URL"
    (with `body` as the seed shows it)."""
    example = example.strip()
    if example.startswith("curl "):
        method, url, curl_body, curl_headers = parse_curl(example)
        body = curl_body if body is None else body
        headers = {**curl_headers, **(headers or {})}
    else:
        method, url = example.split(None, 1)
        if url.startswith("/"):  # a path alone ("POST /api/task/query"): the server is implied
            url = "http://seed.example" + url
    if isinstance(body, str):
        body = body.encode()
    headers = dict(headers or {})
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"  # the seeds' bodies are JSON
    return http(method, _rebase(url, base), body, headers=headers)


def ok_json(answer: HttpAnswer, status: int = 200):
    assert answer.status == status, answer
    return answer.json()
