"""SiteService: thin; the caller is the party its client certificate names (server/sites/peers.py),
the domain is server/sites/sites.py."""
from __future__ import annotations

from google.protobuf import empty_pb2
from taskhub.v1 import site_service_pb2_grpc as pb_grpc

from .. import errors
from ..sites.peers import calling_party
from ..sites.sites import Sites
from .errors import mapped

EMPTY = empty_pb2.Empty()


class SiteService(pb_grpc.SiteServiceServicer):
    def __init__(self, sites: Sites):
        self.sites = sites

    def _caller(self, context) -> int:
        return calling_party(context, self.sites.table)

    @mapped
    async def OfferJob(self, request, context):
        await self.sites.offered(self._caller(context), request.job_id, request.dsl_json, request.conf_json)
        return EMPTY

    @mapped
    async def StartComponents(self, request, context):
        await self.sites.start(self._caller(context), request.job_id, list(request.components))
        return EMPTY

    @mapped
    async def EndJob(self, request, context):
        caller = self._caller(context)
        try:
            self.sites.end(caller, request.job_id, request.status, request.reason)
        except ValueError as e:
            raise errors.InvalidArgument(str(e)) from None
        return EMPTY

    @mapped
    async def ReportTask(self, request, context):
        caller = self._caller(context)
        try:
            self.sites.reported(caller, request)
        except ValueError as e:
            raise errors.InvalidArgument(str(e)) from None
        return EMPTY

    @mapped
    async def Deliver(self, request, context):
        await self.sites.delivered(self._caller(context), request)
        return EMPTY

    @mapped
    async def DeliverBatch(self, request, context):
        await self.sites.delivered_batch(self._caller(context), request)
        return EMPTY

    @mapped
    async def DeployPart(self, request, context):
        await self.sites.deploy_from(self._caller(context), request.model_id, request.model_version,
                                     request.new_version, request.predict_dsl_json)
        return EMPTY
