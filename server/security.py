"""`taskhub serve`'s security settings: auth on or off, TLS, limits, and the refusal to run
an open server on a non-loopback address."""
from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import ssl
import stat
import tempfile
from dataclasses import dataclass

import grpc

from gateway.app import https_context
from gateway.fate_auth import FateVerifier

from . import errors
from .api.auth_interceptor import AuthInterceptor
from .auth import Authority
from .auth_store import AuthStore
from .background import spawn


@dataclass
class SecurityConfig:
    auth: bool = False               # require a token on every call (health, reflection aside)
    insecure: bool = False           # allow no auth on a non-loopback address anyway
    tls_cert: str = ""               # PEM certificate chain of the gRPC and HTTP ports
    tls_key: str = ""                # its PEM private key
    tls_client_ca: str = ""          # require client certificates signed by this CA (mutual TLS)
    admin_token_file: str = ""       # default: admin.token next to the database
    open_reflection: bool = True     # gRPC reflection without a token
    max_message_bytes: int = 64 << 20
    max_streams_per_token: int = 256
    fate_sign_window: float = 60.0   # seconds a FATE-signed request's TIMESTAMP may be off
    max_upload_bytes: int = 1 << 30  # a streamed upload (FATE data/upload, model/import)
    open_metrics: bool = False       # with auth: /metrics without a token
    task_user: str = "nobody"        # with auth: the local node's tasks run as this user
    trust_local_node: bool = False   # with auth, not root: local tasks as the server's user anyway


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Security:
    def __init__(self, cfg: SecurityConfig, store, engine, host: str, local_dir: str, shared: bool = False):
        self.cfg, self.engine, self.host = cfg, engine, host
        # shared: other servers on the same database create and revoke tokens too (PostgreSQL)
        self.authority = Authority(AuthStore(store), task_lookup=self._unfinished, shared=shared)
        self._keep_up: asyncio.Task | None = None
        self.admin_file = cfg.admin_token_file or os.path.join(local_dir, "admin.token")
        self._socket_dir = ""
        self._admin_created = False
        if bool(cfg.tls_cert) != bool(cfg.tls_key):
            raise SystemExit("taskhub: give both --tls-cert and --tls-key (or neither)")
        if cfg.tls_client_ca and not cfg.tls_cert:
            raise SystemExit("taskhub: --tls-client-ca needs --tls-cert and --tls-key")

    def check_exposure(self) -> None:
        if self.cfg.auth or self.cfg.insecure or is_loopback(self.host):
            return
        raise SystemExit(
            f"taskhub: refusing to listen on {self.host} without authentication: anyone who reaches it could run"
            " commands as this user. Start with --auth (tokens; add --tls-cert/--tls-key off a trusted network),"
            " or with --insecure if this network is trusted.")

    def _unfinished(self, task_id: int):
        task = self.engine.tasks.get(task_id)
        if task is None or task.terminal:
            return None
        return task.uid, task.spec.namespace

    def protect_files(self, db: str) -> list[str]:
        """Under --auth: what this process writes from now on is its user's only (umask 077), and the
        database, its directory, the admin token and the TLS key are made so. Returns notes for `serve`."""
        os.umask(0o077)
        notes = []
        db = os.path.abspath(db)
        folder = os.path.dirname(db)
        st = os.stat(folder)
        if st.st_uid == os.geteuid() and not st.st_mode & stat.S_ISVTX:   # never a shared dir like /tmp
            os.chmod(folder, 0o700)
        elif st.st_mode & 0o077:
            notes.append(f"the database's directory {folder} is shared with other users; its files are 0600")
        for path in (db, db + "-wal", db + "-shm", self.admin_file, self.cfg.tls_key):
            if path and os.path.exists(path) and os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
                if path == self.cfg.tls_key:
                    notes.append(f"made --tls-key {path} readable by this user only (it was readable by others)")
        return notes

    def share_socket(self, gid: int) -> None:
        """With TLS, tasks running as the task user (group `gid`) may dial the private socket (their
        token is still checked); no one else may."""
        if not self._socket_dir:
            return
        os.chown(self._socket_dir, -1, gid)
        os.chmod(self._socket_dir, 0o710)
        sock = os.path.join(self._socket_dir, "grpc.sock")
        if os.path.exists(sock):
            os.chown(sock, -1, gid)
            os.chmod(sock, 0o660)

    async def start(self) -> None:
        await self.authority.load()
        if self.cfg.auth:
            self._admin_created = await self.authority.ensure_admin_file(self.admin_file)
            self.engine.run_env = self.authority.task_env
            if self.authority.shared:
                self._keep_up = spawn(self.authority.keep_up(), "tokens of other servers")

    def credential_check(self):
        """For the in-process gateway: "Bearer <token>" -> None if valid, else why not (before any body)."""
        if not self.cfg.auth:
            return None

        def check(credential: str) -> str | None:
            try:
                self.authority.authenticate(credential)
            except errors.TaskhubError as e:
                return str(e)
            return None
        return check

    def fate_verifier(self):
        """FATE request signing for the in-process gateway (gateway/fate_auth.py): secrets are
        derived from tokens by the server's key, so only a gateway in this process can check them."""
        if not self.cfg.auth:
            return None
        return FateVerifier(self.authority.fate_secret, window_seconds=self.cfg.fate_sign_window)

    def interceptors(self) -> list:
        if not self.cfg.auth:
            return []
        return [AuthInterceptor(self.authority, open_reflection=self.cfg.open_reflection,
                                max_streams_per_token=self.cfg.max_streams_per_token)]

    # -- ports -------------------------------------------------------------------
    def _read(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise SystemExit(f"taskhub: cannot read {path}: {e.strerror}")

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        if not self.cfg.tls_cert:
            return server.add_insecure_port(address)
        ca = self._read(self.cfg.tls_client_ca) if self.cfg.tls_client_ca else None
        creds = grpc.ssl_server_credentials([(self._read(self.cfg.tls_key), self._read(self.cfg.tls_cert))],
                                            root_certificates=ca, require_client_auth=ca is not None)
        return server.add_secure_port(address, creds)

    def add_gateway_port(self, server: grpc.aio.Server) -> str:
        """With TLS, the in-process gateway dials a private Unix socket (mode 0700 directory) instead
        of the TLS port, so it needs no client certificate. Callers' tokens still pass through."""
        if not self.cfg.tls_cert:
            return ""
        self._socket_dir = tempfile.mkdtemp(prefix="taskhub-")
        target = f"unix:{os.path.join(self._socket_dir, 'grpc.sock')}"
        server.add_insecure_port(target)
        return target

    def http_ssl_context(self) -> ssl.SSLContext | None:
        if not self.cfg.tls_cert:
            return None
        return https_context(self.cfg.tls_cert, self.cfg.tls_key, self.cfg.tls_client_ca)

    def announce(self) -> None:
        parts = ["auth " + ("on" if self.cfg.auth else "off"), "TLS " + (
            "on (mutual)" if self.cfg.tls_client_ca else "on" if self.cfg.tls_cert else "off")]
        print(f"taskhub: security: {', '.join(parts)}", flush=True)
        if self.cfg.auth and self._admin_created:
            print(f"taskhub: admin token written to {self.admin_file}"
                  f" (export TASKHUB_TOKEN=$(cat {self.admin_file}))", flush=True)
        elif self.cfg.auth:
            print(f"taskhub: admin token in {self.admin_file}", flush=True)

    def close(self) -> None:
        if self._keep_up is not None:
            self._keep_up.cancel()
        self.authority.store.flush_audit()  # the last audit entries, before the writer stops
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
