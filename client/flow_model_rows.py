"""FATE Flow's shapes for models and tags, shared by the HTTP family (gateway/families/fate_models.py)
and FlowClient (client/flow_models.py), so both answer alike."""
from __future__ import annotations

import json

from taskhub.v1 import flow_service_pb2 as fpb

from .flow_rows import ARGUMENT, EXCEPTION, SUCCESS


def model_row(m: fpb.FlowModel, filters: list[str] | None = None) -> dict:
    """FATE's t_machine_learning_model_info row (f_ keys) for one party's record."""
    row = {
        "f_model_id": m.model_id, "f_model_version": m.model_version, "f_role": m.party.role,
        "f_party_id": str(m.party.party_id), "f_job_id": m.job_id, "f_parent": bool(m.parent_version),
        "f_parent_info": {"parent_version": m.parent_version} if m.parent_version else {},
        "f_initiator_role": m.initiator.role, "f_initiator_party_id": str(m.initiator.party_id),
        "f_roles": json.loads(m.roles_json or "{}"), "f_train_dsl": json.loads(m.train_dsl_json or "{}"),
        "f_train_runtime_conf": json.loads(m.train_conf_json or "{}"),
        "f_runtime_conf": json.loads(m.train_conf_json or "{}"),
        "f_inference_dsl": json.loads(m.inference_dsl_json or "{}"), "f_imported": int(m.imported),
        "f_loaded_times": m.loaded_times, "f_service_ids": list(m.service_ids), "f_size": m.size,
        "f_components": list(m.components), "f_create_time": m.create_time_ms, "f_update_time": m.update_time_ms,
        "f_fate_version": "1.11.2",
    }
    if filters:
        return {k: v for k, v in row.items() if k.removeprefix("f_") in filters or k in filters}
    return row


def by_party(models, retmsg: str = "success", elsewhere=()) -> dict:
    """FATE's per-party report: {role: {party: retcode}, "detail": {role: {party: {retcode, retmsg}}}}.
    `elsewhere`: DeployedElsewhere outcomes of the parties on other servers (FATE across sites)."""
    out: dict = {"detail": {}}
    for m in models:
        out.setdefault(m.party.role, {})[str(m.party.party_id)] = 0
        out["detail"].setdefault(m.party.role, {})[str(m.party.party_id)] = {"retcode": 0, "retmsg": retmsg}
    for e in elsewhere:
        code = EXCEPTION if e.error else 0
        out.setdefault(e.party.role, {})[str(e.party.party_id)] = code
        out["detail"].setdefault(e.party.role, {})[str(e.party.party_id)] = {"retcode": code,
                                                                            "retmsg": e.error or retmsg}
    return out


def deployed(done: fpb.DeployModelResponse) -> tuple[dict, int, str]:
    """model/deploy's (data, retcode, retmsg): as FATE, 101 "failed" when a party did not deploy its part
    (the parties that did keep the version), naming each."""
    data = by_party(done.models, elsewhere=done.elsewhere)
    data.update(model_id=done.model_id, model_version=done.model_version)
    failed = [f"party {e.party.party_id}: {e.error}" for e in done.elsewhere if e.error]
    return data, (ARGUMENT if failed else SUCCESS), ("failed: " + "; ".join(failed) if failed else "success")


def tag_rows(tags, with_count: bool = False) -> list[dict]:
    out = []
    for t in tags:
        row = {"name": t.name, "description": t.description}
        if with_count:
            row["model_count"] = t.model_count
        out.append(row)
    return out


def tagged_model_rows(models) -> list[dict]:
    return [{"model_id": m.model_id, "model_version": m.model_version, "model_size": m.size, "role": m.party.role,
             "party_id": str(m.party.party_id)} for m in models]
