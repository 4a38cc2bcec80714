"""FATE models: versions, deploy, predict inputs, archives (export/import, store/restore), migrate,
load/bind records, and tags. SQL is in model_store.py; the archive format is in archive.py.

A train job that succeeds makes model (model_id, model_version=job_id): one record per party with
the job's DSL and conf and that party's component models. Deploy makes a child version with a
predict DSL; a predict job names a version and its `pipeline.<cpn>.model` inputs are that
version's component models (handed to the component task in its input).
"""
from __future__ import annotations

import json
import os
from typing import Awaitable, BinaryIO, Callable, Iterable

from .. import auth, errors
from ..model import now_ms
from . import archive, deploy, dsl, names, tenants
from .jobs import FlowHooks, JobIds
from .model import FlowJob, JobStatus
from .model_store import MODEL_COLS, ModelStore

MODEL_ROLES = ("guest", "host", "arbiter", "local")


def _json_or(text: str, default):
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


class FlowModels:
    """Made before FlowJobs, which it hooks into (`hooks()`, given to FlowJobs' constructor): it
    shares FlowJobs' job ids (a model version is a job id) and reads its live jobs through `live_jobs`."""

    def __init__(self, mstore: ModelStore, model_dir: str, ids: JobIds,
                 live_jobs: Callable[[], Iterable[FlowJob]]):
        self.mstore = mstore
        self.model_dir = os.path.abspath(model_dir)
        self.ids = ids
        self.live_jobs = live_jobs
        # (a model row, the new version, its predict DSL) -> {(role, party): "" or why not}: the other
        # parties' servers deploy it too
        self.on_deploy: list[Callable[[dict, str, dict], Awaitable[dict]]] = []
        # Each party on its own server (server/sites/): this server keeps only its own parties' parts,
        # as FATE keeps a host's model parameters on the host's site.
        self.is_local: Callable[[int], bool] = lambda party_id: True

    def hooks(self) -> FlowHooks:
        return FlowHooks(model_source=self.component_model, model_check=self.check_predict_job,
                         deployed_dsl=self.predict_dsl, on_job_end=[self._on_job_end])

    # ------------------------------------------------------------------ train jobs make models
    def _on_job_end(self, job: FlowJob) -> None:
        if job.job_type != "train" or job.status != JobStatus.SUCCESS:
            return
        ts = now_ms()
        conf = _json_or(job.conf_json, {})
        rows = [self._row(job.model_id, job.model_version, role, party, job_id=job.job_id,
                          initiator=job.initiator, roles=conf.get("role") or {}, train_dsl=job.dsl_json,
                          train_conf=job.conf_json, inference_dsl="", ts=ts, tenant=job.namespace)
                for role, party in job.parties if self.is_local(party)]
        self.mstore.register_job(rows)

    @staticmethod
    def _row(model_id: str, model_version: str, role: str, party_id: int, *, job_id: str, initiator, roles: dict,
             train_dsl: str, train_conf: str, inference_dsl: str, ts: int, tenant: str, parent: str = "",
             imported: int = 0) -> dict:
        return {"model_id": model_id, "model_version": model_version, "role": role, "party_id": int(party_id),
                "job_id": job_id, "parent_version": parent, "initiator_role": initiator[0],
                "initiator_party": int(initiator[1]), "roles_json": json.dumps(roles), "train_dsl_json": train_dsl,
                "train_conf_json": train_conf, "inference_dsl_json": inference_dsl, "imported": imported,
                "loaded_times": 0, "service_ids_json": "[]", "create_time_ms": ts, "update_time_ms": ts,
                "tenant": tenant}

    # ------------------------------------------------------------------ reading
    def query(self, model_id: str = "", model_version: str = "", role: str = "", party_id: int = 0) -> list[dict]:
        if role and role not in MODEL_ROLES:
            raise errors.InvalidArgument(f"role must be one of {', '.join(MODEL_ROLES)}, got {role!r}")
        return self.mstore.models(model_id, model_version, role, party_id, auth.CALL_SCOPE.get())

    def get(self, model_id: str, model_version: str, scope: tuple[str, ...] | None = None) -> list[dict]:
        if not model_id or not model_version:
            raise errors.InvalidArgument("model_id and model_version are required")
        rows = self.mstore.models(model_id, model_version, scope=scope)
        if not rows:
            raise errors.NotFound(f"no model {model_id} {model_version}")
        return rows

    def party_row(self, model_id: str, model_version: str, role: str, party_id: int) -> dict:
        rows = self.get(model_id, model_version)
        if not role:
            first = rows[0]
            role, party_id = first["initiator_role"], party_id or first["initiator_party"]
        found = [r for r in rows if r["role"] == role and (not party_id or r["party_id"] == party_id)]
        elsewhere = [p for p in _json_or(rows[0]["roles_json"], {}).get(role) or []
                     if not self.is_local(int(p)) and (not party_id or int(p) == party_id)]
        if not found and elsewhere:
            raise errors.FailedPrecondition(
                f"the {role} {elsewhere[0]} part of model {model_id} {model_version} is kept on party {elsewhere[0]}'s"
                f" own server (a party's model parameters never leave its site): ask that server for it")
        if not found:
            raise errors.NotFound(f"model {model_id} {model_version} has no party {role} {party_id or ''}".rstrip())
        return found[0]

    # ------------------------------------------------------------------ deploy
    async def deploy(self, model_id: str, model_version: str, cpn_list: list[str] | None,
                     predict_dsl_json: str = "", *, as_version: str = "") -> tuple[str, dict]:
        """A new model version with the predict DSL, and {(role, party): "" or why not} of the parties
        kept on other servers (server/sites/), which deploy their parts as the same version. With
        as_version (that is this server's part), that version, with the predict DSL it made."""
        rows = self.get(model_id, model_version)
        comps = self.mstore.components(model_id, model_version)
        train_dsl = _json_or(rows[0]["train_dsl_json"], {})
        if as_version:
            if self.mstore.models(model_id, as_version):
                return as_version, {}    # told again (a resent call)
            predict = dsl.load_json(predict_dsl_json, "predict DSL")
        elif predict_dsl_json:
            predict = dsl.load_json(predict_dsl_json, "predict DSL")
            for name in deploy.pipeline_refs(predict):
                if not any(c["component"] == name for c in comps):
                    raise errors.InvalidArgument(f"the predict DSL reads pipeline.{name}.model, but model "
                                                 f"{model_id} {model_version} has no model of {name}")
        else:
            predict = deploy.predict_dsl(train_dsl, cpn_list, {c["component"] for c in comps})
        keep = set(predict["components"])
        new_version = as_version or self.ids.next()
        ts = now_ms()
        new_rows = []
        for r in rows:
            row = {c: r[c] for c in MODEL_COLS}
            row.update(model_version=new_version, parent_version=model_version, inference_dsl_json=json.dumps(predict),
                       loaded_times=0, service_ids_json="[]", create_time_ms=ts, update_time_ms=ts)
            new_rows.append(row)
        new_comps = [{**c, "model_version": new_version} for c in comps if c["component"] in keep]
        await self.mstore.put_models(new_rows, new_comps)
        elsewhere: dict = {}
        if not as_version:
            for cb in self.on_deploy:
                elsewhere.update(await cb(rows[0], new_version, predict))
        return new_version, elsewhere

    def predict_dsl(self, model_id: str, model_version: str, namespace: str | None = None) -> dict:
        """The deployed predict DSL; with a namespace, only of a model of that namespace."""
        rows = self.get(model_id, model_version, None if namespace is None else (namespace,))
        text = rows[0]["inference_dsl_json"]
        if not text:
            raise errors.NotFound(f"model {model_id} {model_version} is not deployed (no predict DSL): deploy it first")
        return json.loads(text)

    def predict_conf(self, model_id: str, model_version: str) -> dict:
        predict = self.predict_dsl(model_id, model_version)
        rows = self.get(model_id, model_version)
        return deploy.predict_conf(predict, _json_or(rows[0]["train_conf_json"], {}), model_id, model_version)

    # ------------------------------------------------------------------ predict jobs
    def check_predict_job(self, plan: dsl.Plan, namespace: str) -> None:
        """At submit: the model exists in the job's namespace, and has every component model the DSL
        reads, for its parties."""
        wanted = deploy.check_model_refs(plan)
        rows = self.mstore.models(plan.model_id, plan.model_version, scope=(namespace,))
        if not rows:
            raise errors.InvalidArgument(f"job_parameters names model {plan.model_id} {plan.model_version}, "
                                         f"which this server does not have (model/query lists the models)")
        have = {c["component"] for c in self.mstore.components(plan.model_id, plan.model_version)}
        missing = [n for n in wanted if n not in have]
        if missing:
            raise errors.InvalidArgument(f"model {plan.model_id} {plan.model_version} has no model of "
                                         f"{', '.join(missing)} (read as pipeline.<name>.model)")

    def component_model(self, model_id: str, model_version: str, component: str, role: str, party_id: int) -> dict | None:
        for c in self.mstore.components(model_id, model_version, role, party_id):
            if c["component"] == component:
                return {"component": component, "model": json.loads(c["model_json"]),
                        "meta": _json_or(c["meta_json"], {})}
        return None

    def in_use(self, model_id: str, model_version: str) -> list[str]:
        return [j.job_id for j in self.live_jobs() if not j.terminal and j.job_type == "predict"
                and j.model_id == model_id and j.model_version == model_version]

    async def delete(self, model_id: str, model_version: str) -> int:
        rows = self.get(model_id, model_version)
        users = self.in_use(model_id, model_version)
        if users:
            raise errors.FailedPrecondition(f"model {model_id} {model_version} is used by running predict job(s) "
                                            f"{', '.join(users)}; stop them or wait for them to end")
        await self.mstore.delete_model(model_id, model_version)
        return len(rows)

    # ------------------------------------------------------------------ load and bind
    async def load(self, model_id: str, model_version: str) -> list[dict]:
        rows = self.get(model_id, model_version)
        if not rows[0]["inference_dsl_json"]:
            raise errors.FailedPrecondition("Only deployed models could be used to execute process of loading. "
                                            "Please deploy model before loading.")
        keys = [(r["model_id"], r["model_version"], r["role"], r["party_id"]) for r in rows if r["role"] != "arbiter"]
        await self.mstore.mark_loaded(keys, now_ms())
        return [r for r in rows if r["role"] != "arbiter"]

    async def bind(self, model_id: str, model_version: str, service_id: str) -> list[dict]:
        if not service_id:
            raise errors.InvalidArgument("no service id")
        rows = self.get(model_id, model_version)
        keys = [(r["model_id"], r["model_version"], r["role"], r["party_id"]) for r in rows if r["role"] != "arbiter"]
        await self.mstore.bind_service(keys, service_id, now_ms())
        return rows

    # ------------------------------------------------------------------ archives
    def export(self, model_id: str, model_version: str, role: str, party_id: int) -> tuple[str, bytes]:
        row = self.party_row(model_id, model_version, role, party_id)
        comps = self.mstore.components(model_id, model_version, row["role"], row["party_id"])
        name = f"{row['role']}#{row['party_id']}#{model_id}_{model_version}.zip"
        roles = _json_or(row["roles_json"], {})
        others = [(r, int(p)) for r, ids in roles.items() for p in ids if (r, int(p)) != (row["role"], row["party_id"])]
        return name, archive.pack(row, comps, others)

    async def import_archive(self, data: bytes | BinaryIO, model_id: str = "", model_version: str = "", role: str = "",
                             party_id: int = 0, force: bool = False, tenant: str = "") -> dict:
        """A model from an archive, into `tenant` (default: the caller's home namespace); never over
        another namespace's model."""
        row, comps = archive.unpack(data)
        if not self.is_local(row["party_id"]):
            raise errors.InvalidArgument(
                f"the archive holds the {row['role']} {row['party_id']} part of model {row['model_id']} "
                f"{row['model_version']}, which this server does not run: import it at party {row['party_id']}'s server")
        for field, want in (("model_id", model_id), ("model_version", model_version), ("role", role)):
            if want and row[field] != want:
                raise errors.InvalidArgument(f"the archive holds {field} {row[field]!r}, not {want!r}")
        if party_id and row["party_id"] != party_id:
            raise errors.InvalidArgument(f"the archive holds party_id {row['party_id']}, not {party_id}")
        roles = _json_or(row["roles_json"], {})
        if roles and row["party_id"] not in [int(p) for p in roles.get(row["role"], [])]:
            raise errors.InvalidArgument(f"Party id {row['party_id']} is not in model roles")
        exists = self.mstore.models(row["model_id"], row["model_version"], row["role"], row["party_id"])
        current = {r["tenant"] for r in self.mstore.models(row["model_id"], row["model_version"])}
        if not tenant:  # the namespace the version is in already, if the caller's; else its home
            tenant = next((t for t in sorted(current) if auth.in_scope(t)), tenants.home())
        if current - {tenant}:  # never replace (or add a party to) another namespace's model
            raise errors.PermissionDenied(f"model {row['model_id']} {row['model_version']} belongs to another"
                                          f" namespace; import it under another model_version")
        if exists and not force:
            raise errors.AlreadyExists(f"model {row['model_id']} {row['model_version']} of {row['role']} "
                                       f"{row['party_id']} exists; import with force_update to replace it")
        ts = now_ms()
        row.update(imported=1, loaded_times=0, service_ids_json="[]", create_time_ms=ts, update_time_ms=ts,
                   tenant=tenant)
        await self.mstore.put_models([row], comps)
        return row

    def _stored_path(self, model_id: str, model_version: str, role: str, party_id: int, tenant: str) -> str:
        """<model dir>/<namespace>/<role>#<party>#<model id>/<version>.zip: a namespace restores only its own."""
        names.check_model(model_id, model_version)
        path = os.path.join(self.model_dir, names.check_name(tenant, "namespace"), f"{role}#{party_id}#{model_id}", f"{model_version}.zip")
        return names.inside(self.model_dir, path, "the stored model")

    async def store(self, model_id: str, model_version: str, role: str, party_id: int, force: bool = False) -> str:
        _, data = self.export(model_id, model_version, role, party_id)
        row = self.party_row(model_id, model_version, role, party_id)
        path = self._stored_path(model_id, model_version, row["role"], row["party_id"], row["tenant"])
        if os.path.exists(path) and not force:
            raise errors.AlreadyExists(f"model {model_id} {model_version} is stored already ({path}); "
                                       f"store with force_update to replace it")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return path

    async def restore(self, model_id: str, model_version: str, role: str, party_id: int) -> dict:
        if not (model_id and model_version and role and party_id):
            raise errors.InvalidArgument("model_id, model_version, role and party_id are required")
        scope = auth.CALL_SCOPE.get()  # only the caller's namespaces' stored models
        tenants = scope if scope is not None else sorted(os.listdir(self.model_dir)) if os.path.isdir(
            self.model_dir) else []
        for tenant in tenants:
            path = self._stored_path(model_id, model_version, role, party_id, tenant)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            return await self.import_archive(data, model_id, model_version, role, party_id, force=True, tenant=tenant)
        raise errors.NotFound(f"model {model_id} {model_version} of {role} {party_id} is not stored in "
                              f"{self.model_dir}")

    # ------------------------------------------------------------------ migrate
    async def migrate(self, model_id: str, model_version: str, old_roles: dict, new_roles: dict,
                      new_initiator: tuple[str, int] | None, new_version: str = "") -> tuple[str, str, list[dict]]:
        rows = self.get(model_id, model_version)
        old = _roles(old_roles, "role")
        new = _roles(new_roles, "migrate_role")
        if set(old) != set(new) or any(len(old[r]) != len(new[r]) for r in old):
            raise errors.InvalidArgument("role and migrate_role must list the same roles with as many parties each")
        if old == new:
            raise errors.InvalidArgument("The config of previous roles is the same with that of migrate roles. "
                                         "There is no need to migrate model. Migration process aborting.")
        mapping = {(r, p): new[r][i] for r in old for i, p in enumerate(old[r])}
        have = {(r["role"], r["party_id"]) for r in rows}
        missing = [f"{r} {p}" for r, p in mapping if (r, p) not in have]
        if missing:
            raise errors.InvalidArgument(f"model {model_id} {model_version} has no party {', '.join(missing)}")
        new_id = dsl.model_id_of(new)
        new_version = new_version or self.ids.next()
        names.check_model(new_id, new_version)
        if self.mstore.models(new_id, new_version):
            raise errors.AlreadyExists(f"model {new_id} {new_version} exists already")
        ts = now_ms()
        init = new_initiator or (rows[0]["initiator_role"], mapping.get((rows[0]["initiator_role"],
                                                                         rows[0]["initiator_party"]), 0))
        new_rows, new_comps = [], []
        for r in rows:
            if (r["role"], r["party_id"]) not in mapping:
                continue
            party = mapping[(r["role"], r["party_id"])]
            conf = _json_or(r["train_conf_json"], {})
            conf["role"] = new
            conf["initiator"] = {"role": init[0], "party_id": init[1]}
            row = {c: r[c] for c in MODEL_COLS}
            row.update(model_id=new_id, model_version=new_version, party_id=party, parent_version=model_version,
                       initiator_role=init[0], initiator_party=int(init[1]), roles_json=json.dumps(new),
                       train_conf_json=json.dumps(conf), loaded_times=0, service_ids_json="[]", create_time_ms=ts,
                       update_time_ms=ts)
            new_rows.append(row)
            for c in self.mstore.components(model_id, model_version, r["role"], r["party_id"]):
                new_comps.append({**c, "model_id": new_id, "model_version": new_version, "party_id": party})
        await self.mstore.put_models(new_rows, new_comps)
        return new_id, new_version, new_rows

    # ------------------------------------------------------------------ tags
    def tags(self, limit: int = 0) -> list[dict]:
        return self.mstore.tags(limit=limit, scope=auth.CALL_SCOPE.get())

    def find_tags(self, name: str) -> list[dict]:
        return self.mstore.tags(name_contains=name, scope=auth.CALL_SCOPE.get())

    def tag(self, name: str) -> dict:
        found = self.mstore.get_tag(name) if name else None
        if found is None:
            raise errors.NotFound(f"Can not found '{name}' tag.")
        return found

    async def create_tag(self, name: str, description: str) -> None:
        if not name or not name.strip():
            raise errors.InvalidArgument(f"'{name}' tag created failed. Please input a valid tag name.")
        if self.mstore.get_tag(name):
            raise errors.AlreadyExists(f"'{name}' has already exists in database.")
        await self.mstore.create_tag(name, description, now_ms(), tenants.home())

    async def update_tag(self, name: str, new_name: str, new_desc: str | None) -> None:
        tag = self.tag(name)
        new_name = new_name or name
        desc = tag["description"] if new_desc is None else new_desc
        if new_name == name and desc == tag["description"]:
            raise errors.FailedPrecondition("Nothing to be updated.")
        if new_name != name and self.mstore.get_tag(new_name):
            raise errors.AlreadyExists(f"'{new_name}' tag already exists.")
        await self.mstore.update_tag(name, new_name, desc)

    async def delete_tag(self, name: str) -> None:
        self.tag(name)
        await self.mstore.delete_tag(name)

    def tagged_models(self, name: str) -> list[dict]:
        self.tag(name)
        return self.mstore.tagged_models(name)

    def _model_of_job(self, job_id: str) -> list[dict]:
        rows = self.mstore.models(model_version=job_id) if job_id else []
        if not rows:
            raise errors.NotFound(f"Can not found model by job id: '{job_id}'.")
        return rows

    async def tag_model(self, job_id: str, tag: str, remove: bool) -> dict:
        model = self._model_of_job(job_id)[0]
        if not tag:
            raise errors.InvalidArgument("Tag name should not be an empty string.")
        have = {t["name"] for t in self.mstore.model_tags(job_id)}
        if remove:
            self.tag(tag)
            if tag not in have:
                raise errors.FailedPrecondition(f"Model {model['model_id']} {job_id} does not have tag '{tag}'.")
        else:
            if tag in have:
                raise errors.AlreadyExists(f"Model {model['model_id']} {job_id} already been tagged as tag '{tag}'.")
            if not self.mstore.get_tag(tag):
                await self.mstore.create_tag(tag, "", now_ms(), model["tenant"])
        await self.mstore.tag_model(tag, job_id, remove)
        return model

    def model_tags(self, job_id: str) -> list[dict]:
        self._model_of_job(job_id)
        return self.mstore.model_tags(job_id)


def _roles(value, what: str) -> dict[str, list[int]]:
    if not isinstance(value, dict) or not value:
        raise errors.InvalidArgument(f"{what} must be an object like {{\"guest\": [9999], \"host\": [10000]}}")
    out = {}
    for role, ids in value.items():
        if role not in MODEL_ROLES or not isinstance(ids, list) or not ids:
            raise errors.InvalidArgument(f"{what}.{role}: a role ({', '.join(MODEL_ROLES)}) with a list of party ids")
        try:
            out[role] = [int(p) for p in ids]
        except (TypeError, ValueError):
            raise errors.InvalidArgument(f"{what}.{role}: party ids must be integers") from None
    return out
