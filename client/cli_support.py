"""What every `taskhub` subcommand shares: where the server is, and how to print answers."""
from __future__ import annotations

import json
import os

DEFAULT_SERVER = os.environ.get("TASKHUB_SERVER", "127.0.0.1:50051")


def connect(args):
    """A TaskhubClient for the --server (and --namespace, --token, --tls-ca, if any) of the parsed arguments."""
    from .client import TaskhubClient
    return TaskhubClient(args.server, namespace=getattr(args, "namespace", "") or "",
                         token=getattr(args, "token", None), tls_ca=getattr(args, "tls_ca", None))


def add_connection_flags(parser) -> None:
    """--token and --tls-ca for a subcommand that talks to a server."""
    parser.add_argument("--token", default=None, help="bearer token (default: env TASKHUB_TOKEN)")
    parser.add_argument("--tls-ca", default=None, metavar="PEM",
                        help="CA certificate to trust the server's TLS certificate (default: env TASKHUB_TLS_CA)")


def print_message(message) -> None:
    """A protobuf message as indented JSON with proto field names."""
    from google.protobuf import json_format
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
