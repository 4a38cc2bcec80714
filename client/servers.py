"""Lists of servers: `h1:50051,h2:50051,h3:50051` wherever a server address is taken.

Several servers on one database all answer every call (docs/several-servers.md), so a client
given a list moves to the next address when one is unreachable. This module holds what the
blocking channel (client/failover.py), the gateway's asyncio channel (gateway/failover.py) and the
node agent share: reading the list, which failures move on, which calls may be sent again, the
scheduler's hint, and how each stream resumes where it was.
"""
from __future__ import annotations

import re

import grpc
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

# A follower server refuses calls only the scheduler serves (FAILED_PRECONDITION) and says where
# the scheduler is in this trailing metadata (host:port).
LEADER_METADATA = "taskhub-leader"
# gRPC's words when no connection could be made: the call was never sent, whatever it was.
_NEVER_SENT = "failed to connect to all addresses"
# Calls whose repeat after an unknown outcome changes nothing (besides creates with a request_id).
_REPEATABLE_PREFIXES = ("Get", "List", "Describe", "Watch", "Wait", "Trace", "Read", "Generate", "WhoAmI",
                        "CancelTask", "DrainNode", "Export")
TERMINAL = frozenset({pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_CANCELLED, pb.TASK_STATUS_FAILED})
_GRPC_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^:\[\]/\s]+):(\S*)")


def parse_servers(text: str) -> list[str]:
    """'h1:50051, h2:50051' -> ['h1:50051', 'h2:50051']; ValueError naming a bad element.

    An element may start with grpc:// or grpcs:// (TLS), or be a gRPC target of its own
    (unix:/path, dns:///host:port, ...), which is passed on as it is."""
    items = [item.strip() for item in (text or "").split(",")]
    if items == [""]:
        raise ValueError("no server address given (expected host:port, or a list h1:50051,h2:50051)")
    for i, item in enumerate(items, 1):
        where = f"server address {i} of {text!r}" if len(items) > 1 else "server address"
        if not item:
            raise ValueError(f"{where} is empty (expected host:port[,host:port...])")
        bare = item.removeprefix("grpcs://").removeprefix("grpc://")
        if bare.startswith(_GRPC_SCHEMES):
            continue
        m = _HOST_PORT.fullmatch(bare)
        if not m:
            raise ValueError(f"{where}, {item!r}, is not host:port")
        port = m.group(1)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{where}, {item!r}, has a bad port {port!r} (expected 1-65535)")
    return items


def is_list(target: str) -> bool:
    return "," in (target or "")


def leader_hint(error: grpc.RpcError) -> str:
    """The scheduler's address a follower named when it refused a scheduler-only call, else ''."""
    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return ""
    try:
        trailing = error.trailing_metadata() or ()
    except Exception:  # an error made on this side has no metadata to read
        return ""
    return next((str(v) for k, v in trailing if k == LEADER_METADATA), "")


def never_sent(error: grpc.RpcError) -> bool:
    """No connection was made: the call did nothing anywhere, so any call may go to the next server."""
    return error.code() == grpc.StatusCode.UNAVAILABLE and _NEVER_SENT in (error.details() or "")


def repeatable(method: str, request) -> bool:
    """May this call be sent again (to another server) when its outcome is unknown? Reads and
    follows, cancels and drains, and creates carrying a request_id (the server returns the
    task(s) the first one made)."""
    name = method.rsplit("/", 1)[-1]
    if name.startswith(_REPEATABLE_PREFIXES):
        return True
    return bool(getattr(request, "request_id", "")) if request is not None else False


def moves_on(error: grpc.RpcError, method: str, request, received: bool) -> bool:
    """After this failure, try the next server? `received`: the call's stream gave messages already
    (then only a resumable stream moves on; see resumer()). A deadline moves on only a create (as a
    single server's creates are retried): a slow read would cost its deadline on every server."""
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return not received and bool(getattr(request, "request_id", ""))
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    if received:  # (RunTask resumes only with its request_id: a repeat must not create again)
        return method in RESUMERS and repeatable(method, request)
    return never_sent(error) or repeatable(method, request)


# -- streams that resume on another server from where they were --------------------------------
class Resumer:
    """A stream that is not resumed: sent again only while it gave nothing."""

    def __init__(self, request):
        self.request = request
        self.pending = None  # a message to hand on before the resumed stream's own

    def seen(self, message):
        """The message to hand on, or None to drop it (a repeat of what the reader has)."""
        return message

    def resume(self, was_open: bool):
        """The request that continues the stream on another server; None: nothing is left.
        `was_open`: the broken stream had reached a server (it may have missed something)."""
        return self.request


class TraceResumer(Resumer):
    """TraceTask: from the line after the last one handed on (nothing once its end was)."""

    def __init__(self, request):
        super().__init__(request)
        self.ended = False

    def seen(self, message):
        if message.lines:
            self.request.offset = message.lines[-1].seq + 1
        self.ended = self.ended or message.end
        return message

    def resume(self, was_open: bool):
        return None if self.ended else self.request


class WaitResumer(Resumer):
    """WaitTask: the new server starts with the task as it is now; dropped if the reader has that status."""

    def __init__(self, request):
        super().__init__(request)
        self.status = None
        self.resumed = False

    def seen(self, message):
        first_after_resume, self.resumed = self.resumed, False
        if first_after_resume and message.status == self.status:
            return None
        self.status = message.status
        return message

    def resume(self, was_open: bool):
        if self.status in TERMINAL:
            return None  # its end was handed on already
        self.resumed = self.status is not None
        return self.request


class WaitTasksResumer(Resumer):
    """WaitTasks: only the ids that have not ended yet."""

    def seen(self, message):
        done = {t.id for t in message.tasks}
        left = [i for i in self.request.ids if i not in done]
        del self.request.ids[:]
        self.request.ids.extend(left)
        return message

    def resume(self, was_open: bool):
        return self.request if self.request.ids else None


class WatchTasksResumer(Resumer):
    """WatchTasks: changes made while no server was followed cannot be replayed; the reader is told
    to list again with `overflow`, as when it falls behind."""

    def resume(self, was_open: bool):
        if was_open:
            self.pending = svc.WatchTasksResponse(overflow=True)
        return self.request


class WatchJobResumer(Resumer):
    """WatchJob: the new server sends the job and every task as they are now; those the reader
    has in that state already are dropped."""

    def __init__(self, request):
        super().__init__(request)
        self.job = None
        self.tasks: dict[tuple, object] = {}

    def seen(self, message):
        if message.HasField("job"):
            if self.job == message.job and not message.HasField("task"):
                return None
            self.job = message.job
        if message.HasField("task"):
            t = message.task
            key = (t.task_id, t.party.role, t.party.party_id)
            if self.tasks.get(key) == t and not message.HasField("job"):
                return None
            self.tasks[key] = t
        return message


RESUMERS = {
    "/taskhub.v1.TaskService/TraceTask": TraceResumer,
    "/taskhub.v1.TaskService/WaitTask": WaitResumer,
    "/taskhub.v1.TaskService/RunTask": WaitResumer,  # re-sent with its request_id: follows the same task
    "/taskhub.v1.TaskService/WaitTasks": WaitTasksResumer,
    "/taskhub.v1.TaskService/WatchTasks": WatchTasksResumer,
    "/taskhub.v1.FlowService/WatchJob": WatchJobResumer,
}


def resumer(method: str, request) -> Resumer:
    """How this stream continues elsewhere (it works on its own copy of the request)."""
    copy = type(request)()
    copy.CopyFrom(request)
    return RESUMERS.get(method, Resumer)(copy)
