"""What every `taskhub` subcommand shares: where the server is, and how to print answers."""
from __future__ import annotations

import json
import os
import re
import sys

from google.protobuf import json_format

from .client import TaskhubClient

DEFAULT_SERVER = os.environ.get("TASKHUB_SERVER", "127.0.0.1:50051")
SERVER_HELP = "gRPC address host:port, or a list h1:50051,h2:50051 to fail over along (env TASKHUB_SERVER)"
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'7d', '12h', '30m', '45s', '2w', '3600' -> seconds (0 is 0: callers say what it means)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise ValueError(f"{text!r} is not a duration like 7d, 12h, 30m or 45s")
    return float(m.group(1)) * DURATION_UNITS[m.group(2)]


def connect(args):
    """A TaskhubClient for the --server (and --namespace, --token, --tls-ca, if any) of the parsed arguments."""
    try:
        return TaskhubClient(args.server, namespace=getattr(args, "namespace", "") or "",
                             token=getattr(args, "token", None), tls_ca=getattr(args, "tls_ca", None))
    except ValueError as e:  # a bad --server / TASKHUB_SERVER
        raise SystemExit(f"taskhub: --server: {e}")


def add_connection_flags(parser) -> None:
    """--token and --tls-ca for a subcommand that talks to a server."""
    parser.add_argument("--token", default=None, help="bearer token (default: env TASKHUB_TOKEN)")
    parser.add_argument("--tls-ca", default=None, metavar="PEM",
                        help="CA certificate to trust the server's TLS certificate (default: env TASKHUB_TLS_CA)")


def print_message(message) -> None:
    """A protobuf message as indented JSON with proto field names."""
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2,
                     ensure_ascii=False))


def key_values(items: list[str] | None, what: str) -> dict[str, str]:
    """["k=v", ...] from repeated flags; exits with a clear message on a malformed item."""
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise SystemExit(f"taskhub: {what} must look like KEY=VALUE, got {item!r}")
        out[k] = v
    return out


GLOBAL_FLAGS = ("--server", "--namespace", "--token", "--tls-ca")


def accept_global_flags_after_verb(parser) -> None:
    """kubectl style: a noun's connection flags (--server, -n/--namespace, --token, --tls-ca) are
    accepted after its verb too (`taskhub task list -n fate`). Each verb gets a copy that only
    overrides when given (default SUPPRESS), unless the verb has a flag of that name of its own."""
    import argparse

    def children(p):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                    yield child
                    yield from children(child)

    for noun in (c for a in parser._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices.values()):
        shared = [a for a in noun._actions if set(a.option_strings) & set(GLOBAL_FLAGS)]
        for verb in children(noun):
            for a in shared:
                if not any(o in verb._option_string_actions for o in a.option_strings):
                    verb.add_argument(*a.option_strings, dest=a.dest, type=a.type, metavar=a.metavar,
                                      default=argparse.SUPPRESS, help=a.help)


class _QuietWhenUnread:
    """stdout or stderr of a command that serves until stopped. When the reader of its pipe goes
    away (`taskhub serve | tee log`, and the tee is killed), the command goes on and what it prints
    from then on goes nowhere: a BrokenPipeError raised from whatever printed (the handler of
    SIGTERM, the shutdown itself) would leave it running and deaf to SIGTERM, or stop it half-way."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._unread()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._unread()

    def _unread(self) -> None:
        # The descriptor itself now points at /dev/null: the stream's buffered text, the flush at
        # exit and any process sharing the descriptor write there without failing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def quiet_when_unread() -> None:
    """For `taskhub serve`, `agent` and `gateway`: printing to a pipe nobody reads is not an error."""
    if not isinstance(sys.stdout, _QuietWhenUnread):
        sys.stdout = _QuietWhenUnread(sys.stdout)
    if not isinstance(sys.stderr, _QuietWhenUnread):
        sys.stderr = _QuietWhenUnread(sys.stderr)
