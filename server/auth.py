"""Who may call what: roles, the one table of RPC rules, tokens (stored hashed) and task tokens.

`RULES` maps every RPC of every service to the role it needs and where its namespace is in
the request. tests/test_auth_rules.py fails if an RPC in the protos has no entry, so a new
RPC cannot be served without a rule.

Tokens look like `thk_<id>_<secret>`; the server keeps only their SHA-256. A running task gets
a task token `tht_<task id>_<mac>` (keyed BLAKE2b of the task's id and uid under a server key):
it acts as a submitter in the task's namespace and is valid only while the task has not ended,
so it cannot outlive its task and needs no row.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import Callable

from . import errors
from .auth_store import AuditRecord, AuthStore, TokenRecord

log = logging.getLogger("taskhub.auth")

READER, SUBMITTER, ADMIN, NODE = "reader", "submitter", "admin", "node"
ANY_ROLE = "any"  # any valid token
# Another FATE party's server (issue 19): no token; its client certificate names the party, and the
# SiteService checks each call against that party's place in the job (server/sites/peers.py).
SITE = "site"
ROLES = (READER, SUBMITTER, ADMIN, NODE)
# What each role may do: a rule needing role X is allowed to the roles whose set holds X.
GRANTS = {
    READER: {READER, ANY_ROLE},
    SUBMITTER: {READER, SUBMITTER, ANY_ROLE},
    ADMIN: {READER, SUBMITTER, ADMIN, ANY_ROLE},
    NODE: {NODE, ANY_ROLE},
    SITE: {SITE},
}
ALL_NAMESPACES = "*"
DEFAULT_NAMESPACE = "default"


# What a FATE request names, whose namespace (the tenant that created it) must be one of the
# caller's. Each kind but the last three has a lookup (Authority.owners, filled by the flow domain:
# server/flow/owners.py) that returns the namespaces of what the request names.
JOB = "job"              # request.job_id (empty: a listing, filtered by the domain)
TABLE = "table"          # request.namespace + name (a FATE table), or request.job_id
MODEL = "model"          # request.model_id + model_version (or request.model.*)
MODEL_VERSION = "model_version"  # request.job_id as a model version (and request.tag, a tag)
TAG = "tag"              # request.name (a tag)
TASK = "task"            # request.task_uid (a running component task)
LISTING = "listing"      # names nothing: the domain lists/changes only what CALL_SCOPE allows
IN_STREAM = "in-stream"  # a client stream: the domain checks what it names against CALL_SCOPE
NOTHING = "nothing"      # reads no stored resource (e.g. GenerateDsl works on the DSL it is given)
OWNER_KINDS = (JOB, TABLE, MODEL, MODEL_VERSION, TAG, TASK, LISTING, IN_STREAM, NOTHING)

# The namespaces the current call may see and change (None: all of them: admin, '*', or no
# auth). Set by the auth interceptor for the call's task; read by domains that list or create.
CALL_SCOPE: ContextVar[tuple[str, ...] | None] = ContextVar("taskhub_call_scope", default=None)

# The annotation that names the token which created a task, and its value for the current call
# ("" without auth). Set by the auth gate for calls whose rule stamps (Rule.stamp); the servicer
# adds it to the domain's specs: written into each request's proto map instead, it cost a map
# write and a map read per spec.
CREATOR_ANNOTATION = "taskhub.token"
CALL_CREATOR: ContextVar[str] = ContextVar("taskhub_call_creator", default="")


def home_namespace(default: str = DEFAULT_NAMESPACE) -> str:
    """Where what the current caller creates goes when nothing names a namespace: `default` if it
    may act there, else its first namespace."""
    scope = CALL_SCOPE.get()
    return default if not scope or default in scope else scope[0]


def in_scope(namespace: str, scope: tuple[str, ...] | None = None) -> bool:
    scope = CALL_SCOPE.get() if scope is None else scope
    return scope is None or (namespace or DEFAULT_NAMESPACE) in scope


@dataclass(frozen=True)
class Rule:
    role: str
    namespace: str = ""     # dotted path of the namespace field(s) in the request; "" for none
    stamp: bool = False     # record the creating token in each spec's annotations (CALL_CREATOR)
    audit: bool | None = None  # audit allowed calls too (default: anything beyond reading)
    owner: str = ""         # FATE: what the request names (one of OWNER_KINDS); its namespace is checked
    audited: bool = field(init=False, compare=False, repr=False)  # `audit`, worked out once (a call reads it)

    def __post_init__(self) -> None:
        object.__setattr__(self, "audited", self.role != READER if self.audit is None else self.audit)


_T, _N, _G, _A = "/taskhub.v1.TaskService/", "/taskhub.v1.NodeService/", "/taskhub.v1.TaskGroupService/", \
    "/taskhub.v1.AuthService/"
_F = "/taskhub.v1.FlowService/"
SITE_PREFIX = "/taskhub.v1.SiteService/"
RULES: dict[str, Rule] = {
    _T + "CreateTask": Rule(SUBMITTER, "spec.namespace", stamp=True),
    _T + "CreateTasks": Rule(SUBMITTER, "specs.namespace", stamp=True),
    _T + "RunTask": Rule(SUBMITTER, "spec.namespace", stamp=True),
    _T + "ExecuteTask": Rule(SUBMITTER, "spec.namespace", stamp=True),
    _T + "GetTask": Rule(READER, "namespace"),
    _T + "ListTasks": Rule(READER, "namespace"),
    _T + "CancelTask": Rule(SUBMITTER, "namespace"),
    _T + "DeleteTask": Rule(SUBMITTER, "namespace"),
    _T + "TraceTask": Rule(READER, "namespace"),
    _T + "WaitTask": Rule(READER, "namespace"),
    _T + "WaitTasks": Rule(READER, "namespace"),
    _T + "WatchTasks": Rule(READER, "namespace"),
    # Runs an allowed module's import in a subprocess: more than reading.
    _T + "DescribeModule": Rule(SUBMITTER, audit=False),
    _N + "Connect": Rule(NODE),
    _N + "ListNodes": Rule(ADMIN, audit=False),
    _N + "GetNode": Rule(ADMIN, audit=False),
    _N + "DrainNode": Rule(ADMIN),
    # Templates are shell commands run on a node: admin only, reads included.
    _G + "CreateTemplate": Rule(ADMIN),
    _G + "GetTemplate": Rule(ADMIN, audit=False),
    _G + "ListTemplates": Rule(ADMIN, audit=False),
    _G + "DeleteTemplate": Rule(ADMIN),
    _G + "Deploy": Rule(ADMIN),
    _G + "GetInstance": Rule(ADMIN, audit=False),
    _G + "ListInstances": Rule(ADMIN, audit=False),
    _G + "StopInstance": Rule(ADMIN),
    _A + "CreateToken": Rule(ADMIN),
    _A + "ListTokens": Rule(ADMIN, audit=False),
    _A + "RevokeToken": Rule(ADMIN),
    _A + "WhoAmI": Rule(ANY_ROLE, audit=False),
    _A + "ListAudit": Rule(ADMIN, audit=False),
    "/taskhub.v1.ClusterService/ListServers": Rule(ADMIN, audit=False),
    # FATE: every call names what it touches (`owner`), and that thing's namespace (the one it was
    # created in) must be the caller's: reads by readers, changes by submitters. Component tasks
    # call with their task's token, whose namespace is their job's. tests/test_fate_tenants.py
    # fails for a FlowService RPC without an owner here.
    _F + "SubmitJob": Rule(SUBMITTER, "namespace", owner=NOTHING),
    **{_F + m: Rule(READER, owner=JOB) for m in ("GetJob", "WatchJob", "TraceJob", "ListComponents",
                                                 "GetComponentOutput")},
    **{_F + m: Rule(READER, owner=LISTING) for m in ("ListJobs", "ListFlowTasks", "UploadHistory", "ListModels",
                                                     "ListTags")},
    **{_F + m: Rule(SUBMITTER, owner=JOB) for m in ("StopJob", "RerunJob", "CleanJob")},
    _F + "CleanQueue": Rule(SUBMITTER, owner=LISTING),
    _F + "DeleteMetrics": Rule(SUBMITTER, owner=JOB),  # by job_id, or by date within the caller's namespaces
    _F + "UploadData": Rule(SUBMITTER, owner=IN_STREAM),
    _F + "DownloadData": Rule(SUBMITTER, owner=TABLE),
    _F + "GetTable": Rule(READER, owner=TABLE),
    _F + "ReadTable": Rule(READER, owner=TABLE),
    _F + "DeleteTable": Rule(SUBMITTER, owner=TABLE),
    _F + "WriteTable": Rule(SUBMITTER, owner=IN_STREAM),
    **{_F + m: Rule(SUBMITTER, audit=False, owner=TASK) for m in ("PutTracking", "FederationSend",
                                                                  "FederationReceive")},
    **{_F + m: Rule(READER, owner=MODEL) for m in ("GetPredictDsl", "GetPredictConf", "ExportModel")},
    **{_F + m: Rule(SUBMITTER, owner=MODEL) for m in ("DeployModel", "StoreModel", "RestoreModel", "MigrateModel",
                                                      "LoadModel", "BindModel", "DeleteModel")},
    _F + "ImportModel": Rule(SUBMITTER, owner=IN_STREAM),
    **{_F + m: Rule(SUBMITTER, owner=TAG) for m in ("CreateTag", "UpdateTag", "DeleteTag")},
    _F + "ListTaggedModels": Rule(READER, owner=TAG),
    _F + "TagModel": Rule(SUBMITTER, owner=MODEL_VERSION),
    _F + "ListModelTags": Rule(READER, owner=MODEL_VERSION),
    _F + "GenerateDsl": Rule(READER, owner=NOTHING),
    # Delta tasks: created by submitters; the exchange only by the running parts of a Delta task.
    "/taskhub.v1.DeltaService/CreateDeltaTask": Rule(SUBMITTER, "namespace"),
    "/taskhub.v1.DeltaService/StartDeltaClients": Rule(SUBMITTER, audit=False),
    "/taskhub.v1.DeltaService/DeltaSend": Rule(SUBMITTER, audit=False),
    "/taskhub.v1.DeltaService/DeltaReceive": Rule(SUBMITTER, audit=False),
    # Server to server, between the parties of a FATE job: the certificate, not a token, says who.
    **{SITE_PREFIX + m: Rule(SITE) for m in ("OfferJob", "StartComponents", "EndJob", "ReportTask", "DeployPart")},
    **{SITE_PREFIX + m: Rule(SITE, audit=False) for m in ("Deliver", "DeliverBatch")},
}

# Open without a token: load balancers probe health; reflection only lists the public protos.
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")


CHECKED_TOKENS = 10_000  # Authority._checked holds at most this many
# With several servers on one database (Authority.shared): how often each reads the tokens again
# (what another server created or revoked), and how often at most a token unknown here makes it
# read them at once (a token just created on another server; unknown tokens must not become a
# database read each).
TOKENS_REFRESH_SECONDS = 1.0
UNKNOWN_REFRESH_SECONDS = 0.25


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a stored token, or a running task's token."""

    id: str
    name: str
    role: str
    namespaces: tuple[str, ...]
    expire_time_ms: int = 0
    # Worked out once per checked token (its Caller is cached), not once per call:
    label: str = field(init=False, compare=False)  # how the audit and the spec's stamp name it
    scope: tuple[str, ...] | None = field(init=False, compare=False)  # what CALL_SCOPE holds for its calls

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", f"{self.name} ({self.id})" if self.name else self.id)
        object.__setattr__(self, "scope", None if ALL_NAMESPACES in self.namespaces else tuple(self.namespaces))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Authority:
    """Tokens in memory (loaded from and written through AuthStore), checks, and the audit."""

    store: AuthStore
    task_lookup: Callable[[int], tuple[str, str] | None] = lambda task_id: None  # id -> (uid, namespace) if unfinished
    on_revoke: list[Callable[[str], None]] = field(default_factory=list)
    # Rule.owner kind -> request -> the namespaces of what it names ([] when it names nothing
    # that exists: the domain then answers NOT_FOUND). Filled by the FATE domain at start.
    owners: dict[str, Callable[[object], list[str]]] = field(default_factory=dict)
    _by_hash: dict[str, TokenRecord] = field(default_factory=dict)
    _by_id: dict[str, TokenRecord] = field(default_factory=dict)
    _key: bytes = b""
    _mac: hmac.HMAC | None = None  # HMAC-SHA256 under _key: task tokens made before keyed BLAKE2b (task_token)
    # `authorization` value -> its Caller, for tokens already checked (thk_, thf_): a call then costs
    # one lookup instead of parsing the value and a SHA-256 or an HMAC. Emptied when a token changes
    # (revoke); expiry is checked on every hit; bounded, so unknown tokens cannot grow it without end.
    _checked: dict[str, Caller] = field(default_factory=dict)
    # (authorization, method, namespace as sent) -> (its Caller, the namespace for the audit, the
    # namespace filled in or None): what `admit` decided for a call that only names a namespace, so
    # the same call again costs one lookup. Emptied with _checked, bounded as it is.
    _admitted: dict[tuple[str | None, str, str], tuple[Caller, str, str | None]] = field(default_factory=dict)
    # Other servers create and revoke tokens in the same database (PostgreSQL): see keep_up.
    shared: bool = False
    _read_for_unknown: float = 0.0  # time.monotonic() of the last read for an unknown token

    async def load(self) -> None:
        for t in self.store.all_tokens():
            self._remember(t)
        key = self.store.server_key()
        if key is None:
            key = secrets.token_hex(32)
            await self.store.save_server_key(key)
            key = self.store.server_key()
        self._key = bytes.fromhex(key)
        self._mac = hmac.new(self._key, digestmod=hashlib.sha256)

    def _remember(self, t: TokenRecord) -> None:
        self._by_hash[t.hash] = t
        self._by_id[t.id] = t
        self._checked.clear()
        self._admitted.clear()

    def take_in(self, records: list[TokenRecord]) -> None:
        """The tokens as the database holds them: those created or revoked elsewhere are taken in,
        and the streams of a token revoked elsewhere end as if it was revoked here."""
        for t in records:
            known = self._by_id.get(t.id)
            if known == t:
                continue
            self._remember(t)
            if t.revoke_time_ms and not (known and known.revoke_time_ms):
                for hook in self.on_revoke:
                    hook(t.id)

    async def keep_up(self) -> None:
        """With a shared database, forever: the tokens read again every TOKENS_REFRESH_SECONDS, so a
        token created or revoked on another server is valid, or refused, here within that time."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TOKENS_REFRESH_SECONDS)
            try:
                self.take_in(await loop.run_in_executor(None, self.store.all_tokens))
            except errors.TaskhubError as e:  # the database is away: the tokens known stay as they are
                log.warning("could not read the tokens again: %s", e)

    def _unknown_here(self, token: str) -> bool:
        if token.startswith("thk_"):
            return _hash(token) not in self._by_hash
        return token.startswith("thf_") and token[4:].partition("_")[0] not in self._by_id

    # -- tokens -------------------------------------------------------------
    async def create(self, name: str, role: str, namespaces: list[str], ttl_seconds: int = 0) -> tuple[TokenRecord, str]:
        if role not in ROLES:
            raise errors.InvalidArgument(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if ttl_seconds < 0:
            raise errors.InvalidArgument("ttl_seconds must not be negative")
        namespaces = list(dict.fromkeys(n.strip() for n in namespaces if n.strip()))
        if role == ADMIN:
            namespaces = [ALL_NAMESPACES]
        elif role == NODE:
            namespaces = []
        elif not namespaces:
            raise errors.InvalidArgument(f"a {role} token needs at least one namespace ('*' for every namespace)")
        token_id = secrets.token_hex(4)
        while token_id in self._by_id:
            token_id = secrets.token_hex(4)
        secret = f"thk_{token_id}_{secrets.token_urlsafe(32)}"
        created = now_ms()
        record = TokenRecord(token_id, name or token_id, role, tuple(namespaces), _hash(secret), created,
                             created + ttl_seconds * 1000 if ttl_seconds else 0)
        await self.store.insert_token(record)
        self._remember(record)
        return record, secret

    def tokens(self) -> list[TokenRecord]:
        return sorted(self._by_id.values(), key=lambda t: (-t.create_time_ms, t.id))

    def find(self, id_or_name: str) -> TokenRecord:
        t = self._by_id.get(id_or_name)
        if t is None:
            named = [x for x in self._by_id.values() if x.name == id_or_name]
            if len(named) > 1:
                raise errors.InvalidArgument(f"{len(named)} tokens are named {id_or_name!r}; give the token id")
            t = named[0] if named else None
        if t is None:
            raise errors.NotFound(f"no token with id or name {id_or_name!r}")
        return t

    async def revoke(self, id_or_name: str) -> TokenRecord:
        t = self.find(id_or_name)
        if not t.revoke_time_ms:
            when = now_ms()
            await self.store.revoke_token(t.id, when)
            t = TokenRecord(**{**t.__dict__, "revoke_time_ms": when})
            self._remember(t)
        for hook in self.on_revoke:
            hook(t.id)
        return t

    async def ensure_admin_file(self, path: str) -> bool:
        """Bootstrap: if `path` holds no working admin token, create one there (mode 0600). True if created."""
        try:
            with open(path) as f:
                caller = self.authenticate_token(f.read().strip())
            if caller.role == ADMIN:
                return False
        except (OSError, errors.TaskhubError):
            pass
        _, secret = await self.create("bootstrap-admin", ADMIN, [])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        return True

    # -- task tokens -------------------------------------------------------------
    def task_token(self, task_id: int, uid: str) -> str:
        # Keyed BLAKE2b is a MAC in one C call; HMAC-SHA256 through the hmac module (a copy of
        # the keyed object, an update, a digest) took 1.6 times as long, once per run of a task.
        mac = hashlib.blake2b(f"{task_id}:{uid}".encode(), key=self._key, digest_size=20)
        return f"tht_{task_id}_{mac.hexdigest()}"

    def _hmac_task_token(self, task_id: int, uid: str) -> str:
        """The token of a task that a server before keyed BLAKE2b started, still running on an agent."""
        mac = self._mac.copy()
        mac.update(f"{task_id}:{uid}".encode())
        return f"tht_{task_id}_{mac.hexdigest()[:40]}"

    def task_env(self, task) -> dict[str, str]:
        """What a run's environment gets so its code can call the server as its task (Engine.run_env)."""
        return {"TASKHUB_TOKEN": self.task_token(task.id, task.uid)}

    # -- FATE secrets ------------------------------------------------------------
    def fate_secret(self, token_id: str) -> str | None:
        """A token's FATE `secret_key` (its id is the `app_key`): derived, never stored, and a bearer
        credential for the same token (so the gateway can forward it after checking a signature)."""
        if token_id not in self._by_id:
            return None
        mac = hmac.new(self._key, f"fate:{token_id}".encode(), hashlib.sha256).hexdigest()[:40]
        return f"thf_{token_id}_{mac}"

    # -- checks ----------------------------------------------------------------
    def authenticate_token(self, token: str) -> Caller:
        if self.shared and self._unknown_here(token):
            # Perhaps created on another server since the last refresh (keep_up).
            now = time.monotonic()
            if now >= self._read_for_unknown + UNKNOWN_REFRESH_SECONDS:
                self._read_for_unknown = now
                try:
                    self.take_in(self.store.all_tokens())
                except errors.TaskhubError as e:
                    log.warning("could not read the tokens again: %s", e)
        if token.startswith("tht_"):
            return self._task_caller(token)  # valid only while its task runs: checked every time
        if token.startswith("thf_"):
            token_id = token[4:].partition("_")[0]
            expected = self.fate_secret(token_id)
            t = self._by_id.get(token_id) if expected and hmac.compare_digest(expected, token) else None
        else:
            t = self._by_hash.get(_hash(token)) if token.startswith("thk_") else None
        if t is None:
            raise errors.Unauthenticated("the token is not valid (unknown or mistyped)")
        if t.revoke_time_ms:
            raise errors.Unauthenticated(f"token {t.id} ({t.name}) has been revoked")
        if t.expire_time_ms and now_ms() >= t.expire_time_ms:
            raise errors.Unauthenticated(f"token {t.id} ({t.name}) has expired; ask an admin for a new one")
        return Caller(t.id, t.name, t.role, t.namespaces, t.expire_time_ms)

    def _task_caller(self, token: str) -> Caller:
        _, _, rest = token.partition("_")
        task_text, _, _ = rest.partition("_")
        found = self.task_lookup(int(task_text)) if task_text.isdigit() else None
        if found is None or not (hmac.compare_digest(token, self.task_token(int(task_text), found[0]))
                                 or hmac.compare_digest(token, self._hmac_task_token(int(task_text), found[0]))):
            raise errors.Unauthenticated("the task token is not valid, or its task has ended")
        return Caller(f"task-{task_text}", f"task {task_text}", SUBMITTER, (found[1] or DEFAULT_NAMESPACE,))

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller named by an `authorization` metadata value."""
        caller = self._checked.get(authorization)
        if caller is not None and not (caller.expire_time_ms and now_ms() >= caller.expire_time_ms):
            return caller
        if not authorization:
            raise errors.Unauthenticated("this server requires a token: send 'authorization: Bearer <token>'"
                                         " (taskhub CLI and SDK: set TASKHUB_TOKEN)")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated("malformed authorization: expected 'Bearer <token>'")
        token = token.strip()
        caller = self.authenticate_token(token)
        if not token.startswith("tht_"):  # a task token is valid only while its task runs: checked every time
            if len(self._checked) >= CHECKED_TOKENS:
                self._checked.clear()
            self._checked[authorization] = caller
        return caller

    def admit(self, authorization: str | None, method: str, rule: Rule, request) -> tuple[Caller, str]:
        """`authenticate` then `authorize` (setting CALL_SCOPE between them, for the owner checks):
        the caller and the namespace(s) for the audit. The outcome for a checked token (not a task's)
        and a rule that looks only at one namespace field is remembered: a token's calls repeat."""
        holder = sent = None
        if not rule.owner:
            if not rule.namespace:
                sent = ""
            elif request is not None:
                holder_of, name, one = _holder_path(request, rule.namespace)
                if one:
                    holder = holder_of(request)
                    sent = getattr(holder, name)
        if sent is not None:
            hit = self._admitted.get((authorization, method, sent))
            if hit is not None:
                caller, namespace, filled = hit
                if not (caller.expire_time_ms and now_ms() >= caller.expire_time_ms):
                    CALL_SCOPE.set(caller.scope)
                    if filled is not None:
                        setattr(holder, name, filled)
                    if rule.stamp:
                        CALL_CREATOR.set(caller.label)
                    return caller, namespace
        caller = self.authenticate(authorization)
        CALL_SCOPE.set(caller.scope)  # what the domain may list and create for this call
        try:
            namespace = self.authorize(caller, method, rule, request)
        except errors.TaskhubError as e:
            e.caller = caller  # whom the audit names for the refusal
            raise
        if sent is not None and self._checked.get(authorization) is caller:
            if len(self._admitted) >= 4 * CHECKED_TOKENS:
                self._admitted.clear()
            filled = getattr(holder, name) if holder is not None else sent
            self._admitted[(authorization, method, sent)] = (caller, namespace, filled if filled != sent else None)
        return caller, namespace

    def authorize(self, caller: Caller, method: str, rule: Rule, request) -> str:
        """Raise PermissionDenied unless the caller may make this request. Fills an empty or "*"
        namespace with a one-namespace token's namespace. Returns the namespace(s) for the audit."""
        if rule.role not in GRANTS.get(caller.role, ()):
            raise errors.PermissionDenied(f"a {caller.role} token may not call {method.rsplit('/', 1)[-1]}"
                                          f" (it needs {rule.role if rule.role != ANY_ROLE else 'a token'})")
        seen = []
        if rule.namespace:
            holders, name = _namespace_holders(request, rule.namespace)
            if len(holders) == 1:
                seen.append(self._scope(caller, holders[0], name))
            else:  # for CreateTasks, every spec of the batch: each namespace sent is checked once
                checked: dict[str, str | None] = {}  # namespace as sent -> as filled in (None: kept)
                for message in holders:
                    sent = getattr(message, name)
                    if sent not in checked:
                        seen.append(self._scope(caller, message, name))
                        filled = getattr(message, name)
                        checked[sent] = filled if filled != sent else None
                    elif checked[sent] is not None:
                        setattr(message, name, checked[sent])
        if rule.stamp:
            CALL_CREATOR.set(caller.label)
        if rule.owner and rule.owner in self.owners and request is not None:
            scope = caller.scope
            for ns in self.owners[rule.owner](request):
                if not in_scope(ns, scope):
                    raise errors.PermissionDenied(
                        f"{method.rsplit('/', 1)[-1]} names a FATE {rule.owner} of namespace {ns!r};"
                        f" this token may act only in {', '.join(caller.namespaces) or 'none'}")
        return seen[0] if len(seen) == 1 else ",".join(dict.fromkeys(seen))

    @staticmethod
    def _scope(caller: Caller, message, name: str) -> str:
        ns = getattr(message, name)
        allowed = caller.namespaces
        if ALL_NAMESPACES in allowed:
            return ns or DEFAULT_NAMESPACE
        if ns in ("", ALL_NAMESPACES) and len(allowed) == 1:
            setattr(message, name, allowed[0])  # "my namespace" for a one-namespace token
            return allowed[0]
        if ns == ALL_NAMESPACES:
            raise errors.PermissionDenied(f"this token may act only in namespaces {', '.join(allowed)};"
                                          " name one of them instead of '*'")
        ns = ns or DEFAULT_NAMESPACE
        if ns not in allowed:
            raise errors.PermissionDenied(f"this token may not act in namespace {ns!r}"
                                          f" (it may in: {', '.join(allowed) or 'none'})")
        return ns

    # -- audit -------------------------------------------------------------------
    def audit(self, caller: Caller | None, method: str, namespace: str, tasks: str | Callable[[], str],
              allowed: bool, reason: str, peer: str) -> None:
        """Queue an audit entry. `tasks`: the task ids the call named, or a function giving them when
        the entry is written (AuditRecord)."""
        self.store.append_audit([AuditRecord(now_ms(), caller.id if caller else "", caller.name if caller else "",
                                             method, namespace, tasks, allowed, reason, peer)])


# (request message class, Rule.namespace) -> (a function: request -> the message holding its
# namespace, or the list of them when a step is repeated; the namespace field's name; whether one
# message holds it)
_HOLDER_PATHS: dict[tuple[type, str], tuple[Callable[[object], object], str, bool]] = {}


def _holder_path(message, path: str) -> tuple[Callable[[object], object], str, bool]:
    """A rule's dotted path read once against the request's descriptor: which steps are repeated."""
    key = (type(message), path)
    found = _HOLDER_PATHS.get(key)
    if found is None:
        *heads, name = path.split(".")
        steps, descriptor = [], message.DESCRIPTOR
        for head in heads:
            f = descriptor.fields_by_name[head]
            repeated = getattr(f, "is_repeated", None)  # protobuf >= 5.29; `label` before
            steps.append((head, repeated if repeated is not None else f.label == f.LABEL_REPEATED))
            descriptor = f.message_type
        if not any(repeated for _, repeated in steps):  # one holder ('spec.namespace'), read in one call
            found = (attrgetter(".".join(heads)) if heads else _itself, name, True)
        else:
            found = (partial(_walk, tuple(steps)), name, False)
        _HOLDER_PATHS[key] = found
    return found


def _itself(message):
    return message


def _walk(steps: tuple[tuple[str, bool], ...], message) -> list:
    holders = [message]
    for head, repeated in steps:
        if repeated:
            holders = [item for m in holders for item in getattr(m, head)]
        else:
            holders = [getattr(m, head) for m in holders]
    return holders


def _namespace_holders(message, path: str) -> tuple[list, str]:
    """The messages holding a request's namespace, and the field's name: for 'namespace' the
    request itself, for 'spec.namespace' its spec, for 'specs.namespace' each of its specs."""
    holders, name, one = _holder_path(message, path)
    return [holders(message)] if one else holders(message), name
