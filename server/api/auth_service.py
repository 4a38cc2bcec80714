"""AuthService: tokens and the audit log over the Authority."""
from __future__ import annotations

from taskhub.v1 import auth_service_pb2 as pb
from taskhub.v1 import auth_service_pb2_grpc as svc_grpc

from .. import errors
from ..auth import Authority
from ..auth_store import TokenRecord
from .errors import mapped

MAX_AUDIT = 10_000


def token_to_proto(t: TokenRecord) -> pb.TokenInfo:
    return pb.TokenInfo(id=t.id, name=t.name, role=t.role, namespaces=list(t.namespaces),
                        create_time_ms=t.create_time_ms, expire_time_ms=t.expire_time_ms,
                        revoke_time_ms=t.revoke_time_ms)


class AuthService(svc_grpc.AuthServiceServicer):
    def __init__(self, authority: Authority):
        self.authority = authority

    @mapped
    async def CreateToken(self, request, context):
        record, secret = await self.authority.create(request.name, request.role, list(request.namespaces),
                                                     request.ttl_seconds)
        return pb.CreateTokenResponse(info=token_to_proto(record), token=secret,
                                      fate_secret_key=self.authority.fate_secret(record.id) or "")

    @mapped
    async def ListTokens(self, request, context):
        return pb.ListTokensResponse(tokens=[token_to_proto(t) for t in self.authority.tokens()])

    @mapped
    async def RevokeToken(self, request, context):
        if not request.id:
            raise errors.InvalidArgument("give the id (or name) of the token to revoke")
        return token_to_proto(await self.authority.revoke(request.id))

    @mapped
    async def WhoAmI(self, request, context):
        auth = dict(context.invocation_metadata()).get("authorization")
        caller = self.authority.authenticate(auth)
        return pb.TokenInfo(id=caller.id, name=caller.name, role=caller.role, namespaces=list(caller.namespaces),
                            expire_time_ms=caller.expire_time_ms)

    @mapped
    async def ListAudit(self, request, context):
        limit = request.limit or 100
        if not 0 < limit <= MAX_AUDIT:
            raise errors.InvalidArgument(f"limit must be between 1 and {MAX_AUDIT}")
        return pb.ListAuditResponse(entries=[
            pb.AuditEntry(time_ms=e.time_ms, token_id=e.token_id, token_name=e.token_name, method=e.method,
                          namespace=e.namespace, tasks=e.tasks, allowed=e.allowed, reason=e.reason, peer=e.peer)
            for e in self.authority.store.read_audit(limit, request.token_id)])
