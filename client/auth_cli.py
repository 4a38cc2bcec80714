"""`taskhub token ...`: create, list and revoke tokens; `taskhub token audit`: the audit log (admin)."""
from __future__ import annotations

import sys
import time

from taskhub.v1 import auth_service_pb2 as pb
from taskhub.v1 import auth_service_pb2_grpc as svc

from .cli_support import DEFAULT_SERVER, SERVER_HELP, add_connection_flags, connect, parse_duration, print_message


def expiry_seconds(text: str) -> int:
    """--expires: '30d', '12h', '90m', '3600s' or '3600' -> whole seconds, more than 0."""
    try:
        seconds = int(parse_duration(text))
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise SystemExit(f"taskhub: --expires must look like 30d, 12h, 90m or 3600s; got {text!r}")
    return seconds


def _stub(a):
    return svc.AuthServiceStub(connect(a).channel)


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms else "-"


def cmd_create(a) -> int:
    ttl = expiry_seconds(a.expires) if a.expires else 0
    resp = _stub(a).CreateToken(pb.CreateTokenRequest(name=a.name, role=a.role, namespaces=a.namespace or [],
                                                      ttl_seconds=ttl), timeout=30)
    print(resp.token)
    info = resp.info
    print(f"# token {info.id} ({info.name}): {info.role} in {', '.join(info.namespaces) or '-'}, expires"
          f" {_when(info.expire_time_ms) if info.expire_time_ms else 'never'}. Shown once; keep it secret.\n"
          f"# FATE FlowClient signing: app_key={info.id} secret_key={resp.fate_secret_key}", file=sys.stderr)
    return 0


def cmd_list(a) -> int:
    resp = _stub(a).ListTokens(pb.ListTokensRequest(), timeout=30)
    if a.json:
        print_message(resp)
        return 0
    print(f"{'ID':<9} {'NAME':<20} {'ROLE':<10} {'NAMESPACES':<20} {'CREATED':<16} {'EXPIRES':<16} REVOKED")
    for t in resp.tokens:
        print(f"{t.id:<9} {t.name:<20} {t.role:<10} {','.join(t.namespaces) or '-':<20} {_when(t.create_time_ms):<16}"
              f" {_when(t.expire_time_ms):<16} {_when(t.revoke_time_ms)}")
    return 0


def cmd_revoke(a) -> int:
    t = _stub(a).RevokeToken(pb.RevokeTokenRequest(id=a.token_id), timeout=30)
    print(f"token {t.id} ({t.name}) revoked")
    return 0


def cmd_audit(a) -> int:
    resp = _stub(a).ListAudit(pb.ListAuditRequest(limit=a.limit, token_id=a.of or ""), timeout=30)
    if a.json:
        print_message(resp)
        return 0
    for e in resp.entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time_ms / 1000))
        who = f"{e.token_name} ({e.token_id})" if e.token_id else "(no token)"
        verdict = "allowed" if e.allowed else f"REFUSED: {e.reason}"
        print(f"{when}  {who:<28} {e.method.rsplit('/', 1)[-1]:<16} ns={e.namespace or '-':<12}"
              f" tasks={e.tasks or '-':<10} {verdict}")
    return 0


def add_token_parser(sub) -> None:
    t = sub.add_parser("token", help="create, list and revoke tokens; read the audit log (admin)")
    t.add_argument("--server", default=DEFAULT_SERVER, help=SERVER_HELP)
    add_connection_flags(t)
    verbs = t.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = verbs.add_parser("create", help="create a token; prints it once")
    c.add_argument("--role", required=True, choices=["reader", "submitter", "admin", "node"])
    c.add_argument("--namespace", "-n", action="append",
                   help="namespace it may act in (repeatable; '*' for all); not for admin or node")
    c.add_argument("--expires", help="lifetime: 30d, 12h, 90m, 3600s (default: never)")
    c.add_argument("--name", default="", help="a name to recognise it by")
    c.set_defaults(fn=cmd_create)
    ls = verbs.add_parser("list", help="list tokens (never their secrets)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_list)
    r = verbs.add_parser("revoke", help="revoke a token at once (its agents are dropped)")
    r.add_argument("token_id", help="the token's id or name")
    r.set_defaults(fn=cmd_revoke)
    au = verbs.add_parser("audit", help="the audit log, newest first")
    au.add_argument("--limit", type=int, default=100)
    au.add_argument("--of", help="only this token id")
    au.add_argument("--json", action="store_true")
    au.set_defaults(fn=cmd_audit)
