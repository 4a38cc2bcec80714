"""FATE DSL (v2, and v1) and runtime conf: parsing, checks, the component graph, parameters.

Everything a submit can get wrong is found here, before anything is stored: the error is an
InvalidArgument that says what and where. The result is a `Plan`.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

from client.fate_args import deep_merge

from .. import errors
from . import names

DATA_KEYS = ("data", "train_data", "validate_data", "test_data", "eval_data")
MODEL_KEYS = ("model", "isometric_model")
ROLES = ("guest", "host", "arbiter", "local")
DEFAULT_TIMEOUT = 259_200.0   # FATE's default job_timeout: 3 days
MAX_DOC_BYTES = 4 << 20


@dataclass
class Component:
    name: str
    module: str
    data_inputs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)   # key -> [(cpn, output)]
    model_inputs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key -> [(cpn|pipeline.cpn, output)]
    data_outputs: list[str] = field(default_factory=list)
    model_outputs: list[str] = field(default_factory=list)

    @property
    def upstream(self) -> list[str]:
        seen: list[str] = []
        for refs in (*self.data_inputs.values(), *self.model_inputs.values()):
            for cpn, _ in refs:
                if not cpn.startswith("pipeline.") and cpn not in seen:
                    seen.append(cpn)
        return seen


@dataclass
class Plan:
    dsl: dict
    conf: dict
    components: list[Component]                  # in DSL order
    roles: dict[str, list[int]]                  # role -> party ids, in conf order
    initiator: tuple[str, int]
    job_type: str = "train"
    timeout_seconds: float = DEFAULT_TIMEOUT
    auto_retries: int = 0
    auto_retry_delay: float = 1.0
    model_id: str = ""
    model_version: str = ""
    description: str = ""
    version: int = 2

    @property
    def parties(self) -> list[tuple[str, int]]:
        return [(role, p) for role, ids in self.roles.items() for p in ids]

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def params(self, component: str, role: str, party_id: int) -> dict:
        """The component's parameters for one party: common, then the role's "all", then its index."""
        idx = str(self.roles[role].index(party_id))
        if self.version == 1:
            return _v1_params(self.conf, component, role, int(idx))
        cp = self.conf.get("component_parameters") or {}
        merged: dict = {}
        deep_merge(merged, (cp.get("common") or {}).get(component) or {})
        by_role = (cp.get("role") or {}).get(role) or {}
        for key in _index_keys(by_role, idx):
            deep_merge(merged, (by_role.get(key) or {}).get(component) or {})
        return merged

    def job_parameters(self, role: str, party_id: int) -> dict:
        jp = self.conf.get("job_parameters") or {}
        if self.version == 1:
            return copy.deepcopy(jp)
        merged: dict = {}
        deep_merge(merged, jp.get("common") or {})
        by_role = (jp.get("role") or {}).get(role) or {}
        idx = str(self.roles[role].index(party_id))
        for key in _index_keys(by_role, idx):
            deep_merge(merged, by_role.get(key) or {})
        return merged


def _index_keys(by_role: dict, idx: str) -> list[str]:
    """The keys of a role's parameters that apply to party index `idx`, least specific first:
    "all", then FATE's shared keys ("0|1"), then the index itself."""
    shared = [k for k in by_role if "|" in k and idx in k.split("|")]
    return ["all", *shared, idx]


def _check_index_keys(conf: dict, roles: dict[str, list[int]]) -> None:
    """Role-parameter keys must be "all", an index, or indexes joined by "|" ("0|1"), each naming a party."""
    for section in ("component_parameters", "job_parameters"):
        by_role = (conf.get(section) or {}).get("role") or {}
        if not isinstance(by_role, dict):
            raise errors.InvalidArgument(f"conf.{section}.role must be an object")
        for role, keys in by_role.items():
            if role not in roles:
                continue      # parameters for a role the job does not have are never read
            if not isinstance(keys, dict):
                raise errors.InvalidArgument(f"conf.{section}.role.{role} must be an object keyed by party index")
            for key in keys:
                if key == "all":
                    continue
                parts = str(key).split("|")
                if not all(p.isdigit() and int(p) < len(roles[role]) for p in parts):
                    raise errors.InvalidArgument(
                        f"conf.{section}.role.{role}: key {key!r} is not a party index of {role} "
                        f"(0..{len(roles[role]) - 1}, \"all\", or indexes joined by \"|\" such as \"0|1\")")


def _v1_params(conf: dict, component: str, role: str, idx: int) -> dict:
    """DSL v1 conf: algorithm_parameters (common) and role_parameters (leaves are lists by party index)."""
    merged: dict = {}
    deep_merge(merged, (conf.get("algorithm_parameters") or {}).get(component) or {})
    role_params = ((conf.get("role_parameters") or {}).get(role) or {}).get(component) or {}
    deep_merge(merged, _pick_index(role_params, idx))
    return merged


def _pick_index(node, idx: int):
    if isinstance(node, dict):
        return {k: _pick_index(v, idx) for k, v in node.items()}
    if isinstance(node, list):
        return copy.deepcopy(node[idx]) if idx < len(node) else None
    return copy.deepcopy(node)


def load_json(text: str, what: str) -> dict:
    if len(text.encode()) > MAX_DOC_BYTES:
        raise errors.InvalidArgument(f"the {what} is larger than {MAX_DOC_BYTES} bytes")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise errors.InvalidArgument(f"the {what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument(f"the {what} must be a JSON object")
    return doc


def parse(dsl_text: str, conf_text: str, known_modules: set[str] | None = None) -> Plan:
    """Check a DSL and conf together; returns the plan or raises InvalidArgument."""
    conf = load_json(conf_text, "runtime conf")
    dsl = load_json(dsl_text, "DSL") if dsl_text.strip() else {}
    version = conf.get("dsl_version", 1 if "algorithm_parameters" in conf or "role_parameters" in conf else 2)
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise errors.InvalidArgument(f"dsl_version must be 1 or 2, got {version!r}") from None
    if version not in (1, 2):
        raise errors.InvalidArgument(f"dsl_version must be 1 or 2, got {version}")
    roles = _roles(conf)
    initiator = _initiator(conf, roles)
    components = _components(dsl, version, known_modules)
    _check_edges(components)
    ordered_check_acyclic(components)
    if version == 2:
        _check_index_keys(conf, roles)
    plan = Plan(dsl, conf, components, roles, initiator, version=version)
    _job_parameters(plan)
    for c in components:   # parameters must be objects where given, so a typo fails here, not in a task
        for role, ids in roles.items():
            for p in ids:
                params = plan.params(c.name, role, p)
                if not isinstance(params, dict):
                    raise errors.InvalidArgument(f"component_parameters for {c.name} ({role} {p}) must be an object")
    return plan


def _roles(conf: dict) -> dict[str, list[int]]:
    role = conf.get("role")
    if not isinstance(role, dict) or not role:
        raise errors.InvalidArgument('the conf needs "role", e.g. {"guest": [9999], "host": [10000]}')
    out: dict[str, list[int]] = {}
    for name, ids in role.items():
        if name not in ROLES:
            raise errors.InvalidArgument(f"unknown role {name!r} in conf.role; roles are {', '.join(ROLES)}")
        if not isinstance(ids, list) or not ids:
            raise errors.InvalidArgument(f"conf.role.{name} must be a non-empty list of party ids")
        parties = []
        for p in ids:
            try:
                parties.append(int(p))
            except (TypeError, ValueError):
                raise errors.InvalidArgument(f"conf.role.{name}: party id {p!r} is not an integer") from None
        if len(set(parties)) != len(parties):
            raise errors.InvalidArgument(f"conf.role.{name} lists a party twice")
        out[name] = parties
    return out


def _initiator(conf: dict, roles: dict[str, list[int]]) -> tuple[str, int]:
    init = conf.get("initiator")
    if not isinstance(init, dict) or "role" not in init or "party_id" not in init:
        raise errors.InvalidArgument('the conf needs "initiator": {"role": "guest", "party_id": 9999}')
    role = init["role"]
    try:
        party = int(init["party_id"])
    except (TypeError, ValueError):
        raise errors.InvalidArgument(f"initiator.party_id {init['party_id']!r} is not an integer") from None
    if role not in roles or party not in roles[role]:
        raise errors.InvalidArgument(f"the initiator ({role} {party}) is not one of the conf's roles")
    return role, party


def _refs(value, where: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise errors.InvalidArgument(f"{where} must be a list like [\"reader_0.data\"]")
    out = []
    for ref in value:
        if not isinstance(ref, str) or "." not in ref:
            raise errors.InvalidArgument(f"{where}: {ref!r} is not a reference like \"component.output\"")
        cpn, _, output = ref.rpartition(".")
        out.append((cpn, output))
    return out


def _components(dsl: dict, version: int, known_modules: set[str] | None) -> list[Component]:
    raw = dsl.get("components")
    if not isinstance(raw, dict) or not raw:
        raise errors.InvalidArgument('the DSL needs "components": {"reader_0": {"module": "Reader", ...}, ...}')
    out = []
    for name, body in raw.items():
        names.check_name(name, "component name")  # it names files: logs, tar members
        where = f"components.{name}"
        if not isinstance(body, dict) or not isinstance(body.get("module"), str) or not body["module"]:
            raise errors.InvalidArgument(f"{where} needs \"module\", e.g. \"DataTransform\"")
        if known_modules is not None and body["module"] not in known_modules:
            raise errors.InvalidArgument(
                f"{where}: unknown module {body['module']!r}; this server knows {', '.join(sorted(known_modules))}")
        c = Component(name, body["module"])
        inp = body.get("input") or {}
        if not isinstance(inp, dict):
            raise errors.InvalidArgument(f"{where}.input must be an object")
        data = inp.get("data") or {}
        if not isinstance(data, dict):
            raise errors.InvalidArgument(f"{where}.input.data must be an object like {{\"data\": [\"reader_0.data\"]}}")
        for key, refs in data.items():
            if key not in DATA_KEYS:
                raise errors.InvalidArgument(f"{where}.input.data: unknown key {key!r}; keys are {', '.join(DATA_KEYS)}")
            c.data_inputs[key] = _refs(refs, f"{where}.input.data.{key}")
        for key in MODEL_KEYS:
            if key in inp:
                c.model_inputs[key] = _refs(inp[key], f"{where}.input.{key}")
        outp = body.get("output") or {}
        if not isinstance(outp, dict):
            raise errors.InvalidArgument(f"{where}.output must be an object")
        c.data_outputs = [names.check_name(o, f"{where}.output.data") for o in outp.get("data") or []]
        c.model_outputs = [names.check_name(o, f"{where}.output.model") for o in outp.get("model") or []]
        out.append(c)
    return out


def _check_edges(components: list[Component]) -> None:
    by_name = {c.name: c for c in components}
    for c in components:
        for kind, inputs in (("data", c.data_inputs), ("model", c.model_inputs)):
            for key, refs in inputs.items():
                for cpn, output in refs:
                    if cpn == "args" or cpn.startswith("pipeline."):
                        continue  # v1 job input / a deployed model's component (predict jobs)
                    src = by_name.get(cpn)
                    if src is None:
                        raise errors.InvalidArgument(
                            f"components.{c.name}.input.{key} refers to {cpn}.{output}, but there is no component {cpn!r}")
                    outputs = src.data_outputs if kind == "data" else src.model_outputs
                    if outputs and output not in outputs:
                        raise errors.InvalidArgument(
                            f"components.{c.name}.input.{key} refers to {cpn}.{output}, but {cpn} has no {kind} output "
                            f"{output!r} (it has {', '.join(outputs)})")
                    if not outputs:
                        raise errors.InvalidArgument(
                            f"components.{c.name}.input.{key} refers to {cpn}.{output}, but {cpn} declares no {kind} output")


def ordered_check_acyclic(components: list[Component]) -> list[str]:
    """Topological order of component names; InvalidArgument names a cycle."""
    state: dict[str, int] = {}
    order: list[str] = []
    by_name = {c.name: c for c in components}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise errors.InvalidArgument(f"the DSL has a cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for up in by_name[name].upstream:
            visit(up, path + [name])
        state[name] = 2
        order.append(name)

    for c in components:
        visit(c.name, [])
    return order


def _job_parameters(plan: Plan) -> None:
    jp = plan.conf.get("job_parameters") or {}
    if not isinstance(jp, dict):
        raise errors.InvalidArgument("conf.job_parameters must be an object")
    common = jp.get("common") if plan.version == 2 else jp
    common = common or {}
    if not isinstance(common, dict):
        raise errors.InvalidArgument("conf.job_parameters.common must be an object")
    # FATE's published predict confs name a model but no job_type: naming a model makes a predict job.
    names_model = bool(common.get("model_id")) and bool(common.get("model_version"))
    plan.job_type = str(common.get("job_type", "predict" if names_model else "train"))
    if plan.job_type not in ("train", "predict"):
        raise errors.InvalidArgument(f"job_type must be train or predict, got {plan.job_type!r}")
    try:
        plan.timeout_seconds = float(common.get("job_timeout", DEFAULT_TIMEOUT))
        plan.auto_retries = int(common.get("auto_retries", 0))
        plan.auto_retry_delay = float(common.get("auto_retry_delay", 1))
    except (TypeError, ValueError) as e:
        raise errors.InvalidArgument(f"conf.job_parameters: job_timeout, auto_retries and auto_retry_delay must be numbers ({e})") from None
    if plan.timeout_seconds <= 0:
        raise errors.InvalidArgument("job_timeout must be positive")
    if not 0 <= plan.auto_retries <= 10:
        raise errors.InvalidArgument("auto_retries must be between 0 and 10")
    plan.model_id = str(common.get("model_id", ""))
    plan.model_version = str(common.get("model_version", ""))
    plan.description = str(common.get("description", ""))
    if plan.job_type == "predict" and not (plan.model_id and plan.model_version):
        raise errors.InvalidArgument("a predict job needs job_parameters.common.model_id and model_version")
    if plan.job_type != "predict":
        for c in plan.components:
            for refs in c.model_inputs.values():
                for cpn, _ in refs:
                    if cpn.startswith("pipeline."):
                        raise errors.InvalidArgument(
                            f"components.{c.name} reads {cpn}: a deployed model is only available to predict jobs")


def has_components(dsl_text: str) -> bool:
    return bool(dsl_text.strip()) and bool(load_json(dsl_text, "DSL").get("components"))


def named_model(conf_text: str) -> tuple[str, str] | None:
    """The (model_id, model_version) a predict conf names, or None: what a job submitted with its conf
    alone runs (FATE 1.7+ takes the DSL from the deployed model)."""
    conf = load_json(conf_text, "runtime conf")
    jp = conf.get("job_parameters") or {}
    common = (jp.get("common") if "common" in jp or "role" in jp else jp) if isinstance(jp, dict) else None
    if not isinstance(common, dict) or common.get("job_type", "predict") != "predict":
        return None
    model_id, model_version = common.get("model_id"), common.get("model_version")
    return (str(model_id), str(model_version)) if model_id and model_version else None


def model_id_of(roles: dict[str, list[int]]) -> str:
    """FATE's model id: the parties, sorted by role, then "model"."""
    parts = [f"{role}-{p}" for role in sorted(roles) for p in sorted(roles[role])]
    return "#".join(parts + ["model"])
