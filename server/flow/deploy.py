"""Predict DSLs from train DSLs (deploy, job/dsl/generate) and predict conf templates.

FATE's rules, as its DSL v2 parser applies them: the predict DSL keeps the chosen components (every
component when no list is given) in train-DSL order; a component that produced models reads each
back as `pipeline.<name>.<model output>` and outputs data only; `train_data` becomes `test_data`;
validation data and isometric models are dropped; every data input must come from a kept component.
"""
from __future__ import annotations

import copy
import json

from .. import errors
from . import dsl

def predict_dsl(train_dsl: dict, cpn_list: list[str] | None = None, with_models: set[str] | None = None) -> dict:
    """The predict DSL for `cpn_list` (default: every component).

    `with_models`: the components that really have a stored model (deploy); a listed component
    whose DSL declares a model output but has none is an error."""
    components = train_dsl.get("components") if isinstance(train_dsl, dict) else None
    if not isinstance(components, dict) or not components:
        raise errors.InvalidArgument('the train DSL needs "components": {...}')
    if cpn_list is None:
        cpn_list = list(components)
    if not cpn_list:
        raise errors.InvalidArgument("cpn_list is empty: name the components to deploy")
    unknown = [n for n in cpn_list if n not in components]
    if unknown:
        raise errors.InvalidArgument(f"cpn_list names components the train DSL does not have: {', '.join(unknown)}")
    keep = [n for n in components if n in cpn_list]
    out: dict = {}
    for name in keep:
        body = components[name] or {}
        outputs = body.get("output") or {}
        new: dict = {"module": body.get("module")}
        inputs: dict = {}
        data = (body.get("input") or {}).get("data") or {}
        new_data: dict = {}
        for key, refs in data.items():
            if key == "validate_data":
                continue
            refs = refs if isinstance(refs, list) else [refs]
            for ref in refs:
                up = str(ref).rpartition(".")[0]
                if up not in keep and up != "args":
                    raise errors.InvalidArgument(f"component {name} reads {ref}, but {up} is not deployed: "
                                                 f"add {up} to cpn_list")
            new_data["test_data" if key == "train_data" else key] = list(refs)
        if new_data:
            inputs["data"] = new_data
        if outputs.get("model"):
            if with_models is not None and name not in with_models:
                raise errors.InvalidArgument(f"component {name} declares a model output but the model has no "
                                             f"model of it; it cannot be deployed")
            inputs["model"] = [f"pipeline.{name}.{model}" for model in outputs["model"]]
        if inputs:
            new["input"] = inputs
        if outputs.get("data"):
            new["output"] = {"data": list(outputs["data"])}
        out[name] = new
    return {"components": out}


def parse_cpn(value) -> list[str] | None:
    """A component list as FATE clients send it: a list, or a string with commas (job/dsl/generate)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise errors.InvalidArgument(f"cpn_list must be a list of component names or a comma-separated string, "
                                 f"got {json.dumps(value)}")


def predict_conf(predict: dict, train_conf: dict, model_id: str, model_version: str) -> dict:
    """A predict conf template: the train conf's parties, the model, and each Reader's table to fill in."""
    conf = {
        "dsl_version": 2,
        "initiator": copy.deepcopy(train_conf.get("initiator") or {}),
        "role": copy.deepcopy(train_conf.get("role") or {}),
        "job_parameters": {"common": {"job_type": "predict", "model_id": model_id, "model_version": model_version}},
    }
    readers = [n for n, body in predict.get("components", {}).items() if body.get("module") == "Reader"]
    if readers:
        by_role: dict = {}
        for role, ids in conf["role"].items():
            if role == "arbiter":
                continue
            by_role[role] = {str(i): {r: {"table": {"name": "", "namespace": ""}} for r in readers}
                             for i in range(len(ids))}
        conf["component_parameters"] = {"role": by_role}
    return conf


def check_model_refs(plan: dsl.Plan) -> list[str]:
    """The components a predict plan reads from the deployed model (`pipeline.<name>.model`)."""
    names = []
    for c in plan.components:
        for refs in c.model_inputs.values():
            for cpn, _ in refs:
                if cpn.startswith("pipeline.") and cpn[len("pipeline."):] not in names:
                    names.append(cpn[len("pipeline."):])
    return names


def pipeline_refs(predict: dict) -> list[str]:
    """The same, read off a predict DSL given as a dict (deploy with predict_dsl=)."""
    components = predict.get("components")
    if not isinstance(components, dict) or not components:
        raise errors.InvalidArgument('the predict DSL needs "components": {...}')
    names = []
    for name, body in components.items():
        inputs = (body or {}).get("input") or {} if isinstance(body, dict) else {}
        if not isinstance(body, dict) or not isinstance(inputs, dict):
            raise errors.InvalidArgument(f"components.{name} must be an object with an object \"input\"")
        for key in dsl.MODEL_KEYS:
            refs = inputs.get(key) or []
            for ref in refs if isinstance(refs, list) else [refs]:
                cpn = str(ref).rpartition(".")[0]
                if cpn.startswith("pipeline.") and cpn[len("pipeline."):] not in names:
                    names.append(cpn[len("pipeline."):])
    return names
