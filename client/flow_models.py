"""FlowClient's model and tag nouns (seed 004), and job.generate_dsl, over FlowService's model RPCs.

Answers are FATE's dicts, as the HTTP family gives them (client/flow_model_rows.py holds the shared
shapes). Confs are file paths or dicts, as in FATE's SDK.
"""
from __future__ import annotations

import json
import os

import grpc
from taskhub.v1 import flow_service_pb2 as fpb

from . import flow_rows as rows
from .fate_args import component_names, party_id_of, role_of
from .flow_common import CHUNK, Noun, answer, fate_call, load_json
from .flow_model_rows import by_party, deployed, model_row, tag_rows, tagged_model_rows


def _ref(conf: dict) -> fpb.ModelRef:
    jp = conf.get("job_parameters") if isinstance(conf.get("job_parameters"), dict) else {}
    common = jp.get("common") if isinstance(jp.get("common"), dict) else jp
    model_id = str(conf.get("model_id") or common.get("model_id") or "")
    version = str(conf.get("model_version") or common.get("model_version") or "")
    if not model_id or not version:
        raise ValueError("model_id and model_version are required (or job_parameters with them, or job_id)")
    return fpb.ModelRef(model_id=model_id, model_version=version)


def _party_ref(conf: dict) -> fpb.PartyModelRef:
    ref = _ref(conf)
    role, party_id = role_of(conf.get("role")), party_id_of(conf.get("party_id"))
    if not role or not party_id:
        raise ValueError("role and party_id are required")
    return fpb.PartyModelRef(model_id=ref.model_id, model_version=ref.model_version, role=role, party_id=party_id)


def _cpn_list(cpn_list=None, cpn_file_path=None) -> list[str]:
    if cpn_file_path:
        with open(cpn_file_path, encoding="utf-8") as f:
            text = f.read()
        try:
            value = json.loads(text)
            cpn_list = value.get("cpn_list", value) if isinstance(value, dict) else value
        except ValueError:
            cpn_list = text
    return component_names(cpn_list)


class Model(Noun):
    def _ref_or_job(self, conf: dict, job_id) -> fpb.ModelRef:
        job_id = job_id or conf.get("job_id")
        if job_id:
            found = self._stub.ListModels(fpb.ListModelsRequest(model_version=str(job_id)), timeout=self._timeout)
            if not found.models:
                raise LookupError(f"Model with version {job_id} can not be found in database. "
                                  f"Please check if the model version is valid.")
            return fpb.ModelRef(model_id=found.models[0].model_id, model_version=str(job_id))
        return _ref(conf)

    @fate_call()
    def load(self, conf_path=None, job_id=None) -> dict:
        if conf_path is None and job_id is None:
            raise ValueError("give conf_path or job_id")
        try:
            ref = self._ref_or_job(load_json(conf_path, "conf"), job_id)
        except LookupError as e:
            return answer(retcode=rows.ARGUMENT, retmsg=str(e))
        done = self._stub.LoadModel(ref, timeout=self._timeout)
        return answer(by_party(done.models), job_id=ref.model_version)

    @fate_call()
    def bind(self, conf_path, job_id=None) -> dict:
        conf = load_json(conf_path, "conf")
        try:
            ref = self._ref_or_job(conf, job_id)
        except LookupError as e:
            return answer(retcode=rows.ARGUMENT, retmsg=str(e))
        service_id = str(conf.get("service_id") or "")
        if not service_id:
            return answer(retcode=rows.ARGUMENT, retmsg="no service id")
        self._stub.BindModel(fpb.BindModelRequest(model=ref, service_id=service_id), timeout=self._timeout)
        return answer(retmsg=f"service id is {service_id}")

    @fate_call(not_found=404)
    def export_model(self, conf_path, to_database=False) -> dict:
        conf = load_json(conf_path, "conf")
        ref = _party_ref(conf)
        if to_database:
            done = self._stub.StoreModel(fpb.StoreModelRequest(model=ref, force_update=bool(conf.get("force_update"))),
                                         timeout=self._timeout)
            return answer({"model_id": ref.model_id, "model_version": ref.model_version, "role": ref.role,
                           "party_id": ref.party_id, "path": done.path})
        output = conf.get("output_path")
        if not output:
            raise ValueError("output_path is required (the directory to write the archive in)")
        os.makedirs(output, exist_ok=True)
        path = None
        with open(os.path.join(output, ".export.part"), "wb") as f:
            for part in self._stub.ExportModel(ref, timeout=self._timeout):
                if part.file_name:
                    path = os.path.join(output, part.file_name)
                f.write(part.chunk)
        os.replace(os.path.join(output, ".export.part"), path)
        return {"retcode": rows.SUCCESS, "file": path, "retmsg": f"download successfully, please check {path}"}

    @fate_call(not_found=rows.ARGUMENT)
    def import_model(self, conf_path, from_database=False) -> dict:
        conf = load_json(conf_path, "conf")
        if from_database:
            ref = _party_ref(conf)
            self._stub.RestoreModel(ref, timeout=self._timeout)
            return answer({"model_id": ref.model_id, "model_version": ref.model_version, "role": ref.role,
                           "party_id": ref.party_id})
        path = conf.get("file") or ""
        if not os.path.isfile(path):
            raise ValueError(f"the archive to import does not exist on this machine: {path!r}")
        expect = fpb.ImportModelExpect(model_id=str(conf.get("model_id") or ""),
                                       model_version=str(conf.get("model_version") or ""),
                                       role=role_of(conf.get("role")), party_id=party_id_of(conf.get("party_id")),
                                       force_update=bool(int(conf.get("force_update") or 0)))

        def messages():
            yield fpb.ImportModelRequest(expect=expect)
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield fpb.ImportModelRequest(chunk=chunk)
        got = self._stub.ImportModel(messages(), timeout=self._timeout)
        return answer({"model_id": got.model_id, "model_version": got.model_version, "role": got.party.role,
                       "party_id": got.party.party_id})

    @fate_call(not_found=rows.EXCEPTION)
    def migrate(self, conf_path) -> dict:
        conf = load_json(conf_path, "conf")
        need = ("migrate_initiator", "role", "migrate_role", "model_id", "model_version", "execute_party",
                "job_parameters")
        missing = [k for k in need if k not in conf]
        if missing:
            return answer(retcode=rows.ARGUMENT, retmsg=f"required argument are missing: {','.join(missing)}")
        init = conf["migrate_initiator"] if isinstance(conf["migrate_initiator"], dict) else {}
        done = self._stub.MigrateModel(fpb.MigrateModelRequest(
            model_id=str(conf["model_id"]), model_version=str(conf["model_version"]),
            role_json=json.dumps(conf["role"]), migrate_role_json=json.dumps(conf["migrate_role"]),
            migrate_initiator=fpb.FlowParty(role=role_of(init.get("role")), party_id=party_id_of(init.get("party_id"))),
            unify_model_version=str(conf.get("unify_model_version") or "")), timeout=self._timeout)
        data = by_party(done.models)
        data.update(model_id=done.model_id, model_version=done.model_version)
        return answer(data, job_id=done.model_version)

    def tag_model(self, job_id, tag_name, remove=False) -> dict:
        try:
            self._stub.TagModel(fpb.TagModelRequest(job_id=str(job_id), tag=tag_name or "", remove=bool(remove)),
                                timeout=self._timeout)
        except grpc.RpcError as e:
            return answer(retcode=rows.EXCEPTION, retmsg=e.details() or e.code().name)
        if remove:
            return answer(retmsg=f"'{tag_name}' tag has been removed from tag list of model with job id: {job_id}.")
        return answer(retmsg=f"Adding {tag_name} tag for model with job id: {job_id} successfully.")

    def tag_list(self, job_id) -> dict:
        try:
            found = self._stub.ListModelTags(fpb.ListModelTagsRequest(job_id=str(job_id)), timeout=self._timeout)
        except grpc.RpcError as e:
            return answer(retcode=rows.EXCEPTION, retmsg=e.details() or e.code().name)
        return answer({"tags": tag_rows(found.tags), "count": len(found.tags)})

    @fate_call(not_found=404)
    def deploy(self, model_id, model_version=None, cpn_list=None, predict_dsl=None, components_checkpoint=None):
        dsl = load_json(predict_dsl, "predict DSL") if predict_dsl else None
        done = self._stub.DeployModel(fpb.DeployModelRequest(
            model_id=str(model_id), model_version=str(model_version or ""), cpn_list=_cpn_list(cpn_list),
            predict_dsl_json=json.dumps(dsl) if dsl else ""), timeout=self._timeout)
        data, retcode, retmsg = deployed(done)
        return answer(data, retcode=retcode, retmsg=retmsg)

    @fate_call(not_found=210)
    def get_predict_dsl(self, model_id, model_version) -> dict:
        found = self._stub.GetPredictDsl(fpb.ModelRef(model_id=str(model_id), model_version=str(model_version)),
                                         timeout=self._timeout)
        return answer(json.loads(found.dsl_json))

    @fate_call(not_found=210)
    def get_predict_conf(self, model_id, model_version) -> dict:
        found = self._stub.GetPredictConf(fpb.ModelRef(model_id=str(model_id), model_version=str(model_version)),
                                          timeout=self._timeout)
        return answer(json.loads(found.conf_json))

    @fate_call(not_found=rows.EXCEPTION)
    def get_model_info(self, model_id=None, model_version=None, role=None, party_id=None, query_filters=None,
                       **kwargs) -> dict:
        found = self._stub.ListModels(fpb.ListModelsRequest(
            model_id=str(model_id or ""), model_version=str(model_version or kwargs.get("job_id") or ""),
            role=role_of(role), party_id=party_id_of(party_id)), timeout=self._timeout)
        if not found.models:
            return answer([], retcode=rows.EXCEPTION, retmsg="Query model info failed, cannot find model from db.")
        return answer([model_row(m, query_filters) for m in found.models], retmsg="Query model info from db success.")


def _exception(fn):
    """FATE raises on tag errors: retcode 100 with the message."""
    def call(*args, **kwargs) -> dict:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as e:
            return answer(retcode=rows.EXCEPTION, retmsg=e.details() or e.code().name)
    call.__name__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call


class Tag(Noun):
    @_exception
    def create(self, tag_name, tag_desc=None) -> dict:
        self._stub.CreateTag(fpb.CreateTagRequest(name=tag_name or "", description=tag_desc or ""),
                             timeout=self._timeout)
        return answer(retmsg=f"'{tag_name}' tag has been created successfully.")

    @_exception
    def update(self, tag_name, new_tag_name=None, new_tag_desc=None) -> dict:
        req = fpb.UpdateTagRequest(name=tag_name or "", new_name=new_tag_name or "")
        if new_tag_desc is not None:
            req.new_description = new_tag_desc
        self._stub.UpdateTag(req, timeout=self._timeout)
        return answer(retmsg=f"Infomation of '{tag_name}' tag has been updated successfully.")

    @_exception
    def list(self, limit=10) -> dict:
        found = self._stub.ListTags(fpb.ListTagsRequest(limit=max(int(limit or 0), 0)), timeout=self._timeout)
        return answer({"tags": tag_rows(found.tags, with_count=True)})

    @_exception
    def query(self, tag_name, with_model=False) -> dict:
        if with_model:
            found = self._stub.ListTaggedModels(fpb.TagRef(name=tag_name or ""), timeout=self._timeout)
            return answer({"models": tagged_model_rows(found.models), "count": len(found.models)})
        found = self._stub.ListTags(fpb.ListTagsRequest(name_contains=tag_name or ""), timeout=self._timeout)
        if not tag_name or not found.tags:
            return answer(retcode=rows.EXCEPTION, retmsg="No tags found.")
        return answer({"tags": tag_rows(found.tags)})

    @_exception
    def delete(self, tag_name) -> dict:
        self._stub.DeleteTag(fpb.TagRef(name=tag_name or ""), timeout=self._timeout)
        return answer(retmsg=f"'{tag_name}' tag has been deleted successfully.")


@fate_call()
def generate_dsl(job, train_dsl_path, cpn_file_path=None, cpn_list=None, version="2") -> dict:
    """job.generate_dsl: a predict DSL from a train DSL (path or dict) and components (list, or a file)."""
    train = load_json(train_dsl_path, "train DSL")
    found = job._stub.GenerateDsl(fpb.GenerateDslRequest(train_dsl_json=json.dumps(train),
                                                         cpn_list=_cpn_list(cpn_list, cpn_file_path)),
                                  timeout=job._timeout)
    return answer(json.loads(found.dsl_json))
