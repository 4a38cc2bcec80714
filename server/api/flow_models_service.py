"""FlowService's model and tag methods (mixed into FlowService): proto in, server/flow/models.py, proto out."""
from __future__ import annotations

import json
import tempfile

from google.protobuf import empty_pb2
from taskhub.v1 import flow_service_pb2 as pb

from .. import errors
from ..flow import deploy
from ..flow.archive import MAX_ARCHIVE_BYTES
from ..flow.models import FlowModels
from .errors import mapped

CHUNK = 256 << 10
SPOOL_BYTES = 4 << 20


def model_to_proto(row: dict, components: list[str] | None = None) -> pb.FlowModel:
    return pb.FlowModel(
        model_id=row["model_id"], model_version=row["model_version"],
        party=pb.FlowParty(role=row["role"], party_id=row["party_id"]), job_id=row["job_id"],
        parent_version=row["parent_version"],
        initiator=pb.FlowParty(role=row["initiator_role"], party_id=row["initiator_party"]),
        roles_json=row["roles_json"], train_dsl_json=row["train_dsl_json"], train_conf_json=row["train_conf_json"],
        inference_dsl_json=row["inference_dsl_json"], imported=bool(row["imported"]),
        loaded_times=row["loaded_times"], service_ids=json.loads(row["service_ids_json"] or "[]"),
        size=row.get("size", 0), components=components or [], create_time_ms=row["create_time_ms"],
        update_time_ms=row["update_time_ms"])


def tag_to_proto(tag: dict) -> pb.FlowTag:
    return pb.FlowTag(name=tag["name"], description=tag["description"] or "",
                      model_count=tag.get("model_count", 0), create_time_ms=tag.get("create_time_ms", 0))


def _json_object(text: str, what: str) -> dict:
    try:
        value = json.loads(text) if text else None
    except ValueError as e:
        raise errors.InvalidArgument(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise errors.InvalidArgument(f"{what} must be a JSON object")
    return value


class FlowModelMethods:
    models: FlowModels
    max_upload: int

    def _models_out(self, rows: list[dict]) -> list[pb.FlowModel]:
        out = []
        for r in rows:
            comps = [c["component"] for c in self.models.mstore.components(r["model_id"], r["model_version"],
                                                                          r["role"], r["party_id"])]
            out.append(model_to_proto(r, comps))
        return out

    @mapped
    async def ListModels(self, request, context):
        return pb.ListModelsResponse(models=self._models_out(self.models.query(
            request.model_id, request.model_version, request.role, request.party_id)))

    @mapped
    async def DeployModel(self, request, context):
        version, elsewhere = await self.models.deploy(request.model_id, request.model_version,
                                                      list(request.cpn_list) or None, request.predict_dsl_json)
        return pb.DeployModelResponse(model_id=request.model_id, model_version=version,
                                      models=self._models_out(self.models.get(request.model_id, version)),
                                      elsewhere=[pb.DeployedElsewhere(party=pb.FlowParty(role=r, party_id=p), error=e)
                                                 for (r, p), e in sorted(elsewhere.items())])

    @mapped
    async def GetPredictDsl(self, request, context):
        return pb.PredictDslResponse(dsl_json=json.dumps(self.models.predict_dsl(request.model_id,
                                                                                 request.model_version)))

    @mapped
    async def GetPredictConf(self, request, context):
        return pb.PredictConfResponse(conf_json=json.dumps(self.models.predict_conf(request.model_id,
                                                                                    request.model_version)))

    @mapped
    async def ExportModel(self, request, context):
        name, data = self.models.export(request.model_id, request.model_version, request.role, request.party_id)
        for start in range(0, max(len(data), 1), CHUNK):
            yield pb.ModelArchiveChunk(file_name=name if start == 0 else "", chunk=data[start:start + CHUNK])

    @mapped
    async def ImportModel(self, request_iterator, context):
        first = await request_iterator.__anext__()
        if first.WhichOneof("part") != "expect":
            raise errors.InvalidArgument("the first ImportModel message must carry `expect`")
        limit = min(MAX_ARCHIVE_BYTES, self.max_upload)
        size = 0
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as archive:  # on disk past SPOOL_BYTES
            async for msg in request_iterator:
                if msg.WhichOneof("part") != "chunk":
                    raise errors.InvalidArgument("after `expect`, ImportModel messages carry archive chunks only")
                size += len(msg.chunk)
                if size > limit:
                    raise errors.ResourceExhausted(f"the archive is larger than {limit} bytes"
                                                   " (taskhub serve --max-upload-mb, at most 256 MiB)")
                archive.write(msg.chunk)
            archive.seek(0)
            e = first.expect
            row = await self.models.import_archive(archive, e.model_id, e.model_version, e.role, e.party_id,
                                                   e.force_update)
        return self._models_out([self.models.party_row(row["model_id"], row["model_version"], row["role"],
                                                       row["party_id"])])[0]

    @mapped
    async def StoreModel(self, request, context):
        m = request.model
        return pb.StoreModelResponse(path=await self.models.store(m.model_id, m.model_version, m.role, m.party_id,
                                                                  request.force_update))

    @mapped
    async def RestoreModel(self, request, context):
        row = await self.models.restore(request.model_id, request.model_version, request.role, request.party_id)
        return self._models_out([self.models.party_row(row["model_id"], row["model_version"], row["role"],
                                                       row["party_id"])])[0]

    @mapped
    async def MigrateModel(self, request, context):
        init = None
        if request.HasField("migrate_initiator") and request.migrate_initiator.role:
            init = (request.migrate_initiator.role, request.migrate_initiator.party_id)
        new_id, version, _ = await self.models.migrate(
            request.model_id, request.model_version, _json_object(request.role_json, "role_json"),
            _json_object(request.migrate_role_json, "migrate_role_json"), init, request.unify_model_version)
        return pb.MigrateModelResponse(model_id=new_id, model_version=version,
                                       models=self._models_out(self.models.get(new_id, version)))

    @mapped
    async def LoadModel(self, request, context):
        rows = await self.models.load(request.model_id, request.model_version)
        return pb.ModelRecordsResponse(models=self._models_out(
            [r for r in self.models.get(request.model_id, request.model_version)
             if (r["role"], r["party_id"]) in {(x["role"], x["party_id"]) for x in rows}]))

    @mapped
    async def BindModel(self, request, context):
        await self.models.bind(request.model.model_id, request.model.model_version, request.service_id)
        return pb.ModelRecordsResponse(models=self._models_out(self.models.get(request.model.model_id,
                                                                               request.model.model_version)))

    @mapped
    async def DeleteModel(self, request, context):
        return pb.DeleteModelResponse(deleted=await self.models.delete(request.model_id, request.model_version))

    @mapped
    async def CreateTag(self, request, context):
        await self.models.create_tag(request.name, request.description)
        return empty_pb2.Empty()

    @mapped
    async def UpdateTag(self, request, context):
        desc = request.new_description if request.HasField("new_description") else None
        await self.models.update_tag(request.name, request.new_name, desc)
        return empty_pb2.Empty()

    @mapped
    async def ListTags(self, request, context):
        if request.limit < 0:
            raise errors.InvalidArgument("limit must not be negative")
        tags = (self.models.find_tags(request.name_contains) if request.name_contains
                else self.models.tags(request.limit))
        return pb.ListTagsResponse(tags=[tag_to_proto(t) for t in tags])

    @mapped
    async def DeleteTag(self, request, context):
        await self.models.delete_tag(request.name)
        return empty_pb2.Empty()

    @mapped
    async def ListTaggedModels(self, request, context):
        rows = self.models.tagged_models(request.name)
        return pb.ListModelsResponse(models=[model_to_proto({**self.models.party_row(
            r["model_id"], r["model_version"], r["role"], r["party_id"]), "size": r["size"]}) for r in rows])

    @mapped
    async def TagModel(self, request, context):
        await self.models.tag_model(request.job_id, request.tag, request.remove)
        return empty_pb2.Empty()

    @mapped
    async def ListModelTags(self, request, context):
        return pb.ListTagsResponse(tags=[tag_to_proto(t) for t in self.models.model_tags(request.job_id)])

    @mapped
    async def GenerateDsl(self, request, context):
        train = _json_object(request.train_dsl_json, "train_dsl_json")
        return pb.PredictDslResponse(dsl_json=json.dumps(deploy.predict_dsl(train, list(request.cpn_list) or None)))
