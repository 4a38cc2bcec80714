"""FATE Flow's shapes for models and tags, shared by the HTTP family (gateway/families/fate_models.py)
and FlowClient (client/flow_models.py), so both answer alike."""
from __future__ import annotations

import json

from taskhub.v1 import flow_service_pb2 as fpb


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


def by_party(models, retmsg: str = "success", elsewhere: str = "") -> dict:
    """FATE's per-party report: {role: {party: retcode}, "detail": {role: {party: {retcode, retmsg}}}}.
    With `elsewhere`, the model's parties kept on other servers (FATE across sites) are listed too,
    with that message."""
    out: dict = {"detail": {}}
    for m in models:
        out.setdefault(m.party.role, {})[str(m.party.party_id)] = 0
        out["detail"].setdefault(m.party.role, {})[str(m.party.party_id)] = {"retcode": 0, "retmsg": retmsg}
    if elsewhere and models:
        try:
            roles = json.loads(models[0].roles_json or "{}")
        except ValueError:
            roles = {}
        for role, ids in roles.items() if isinstance(roles, dict) else ():
            for party in ids if isinstance(ids, list) else ():
                if str(party) not in out.get(role, {}):
                    out.setdefault(role, {})[str(party)] = 0
                    out["detail"].setdefault(role, {})[str(party)] = {
                        "retcode": 0, "retmsg": elsewhere.format(party=party)}
    return out


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
