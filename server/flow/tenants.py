"""Which namespace (tenant) each FATE resource belongs to, and the lookups auth's rule table uses.

A job belongs to the namespace it was submitted in (flow_jobs.namespace); its tasks, metrics,
logs and outputs are reached through its id. Tables, models and tags carry a `tenant` column:
a table is its writing job's, a trained model its train job's, an imported model or a new tag
the importer's or creator's (auth.home_namespace). The FATE table namespace is a different
thing (a name part, e.g. "experiment").

`owner_lookups` gives server/auth.py, per Rule.owner kind, request -> namespaces of what it names.
"""
from __future__ import annotations

from typing import Callable

from .. import auth
from .jobs import DEFAULT_NAMESPACE
from .store import FlowStore


def home() -> str:
    """The namespace the current caller's new FATE tables, models, tags and upload jobs go to:
    FATE's default namespace (as for jobs) if the caller may act there, else its first."""
    return auth.home_namespace(DEFAULT_NAMESPACE)


def owner_lookups(fstore: FlowStore, running_component) -> dict[str, Callable[[object], list[str]]]:
    """running_component(uid) -> (job, task) | None."""
    store = fstore.store

    def job(request) -> list[str]:
        return store.flow_job_tenants(request.job_id) if request.job_id else []

    def table(request) -> list[str]:
        name = getattr(request, "name", "") or getattr(request, "table_name", "")
        if request.namespace or name:
            return store.flow_table_tenants(request.namespace, name)
        return job(request) if getattr(request, "job_id", "") else []

    def model(request) -> list[str]:
        ref = request.model if hasattr(request, "model") else request
        return store.flow_model_tenants(ref.model_version, ref.model_id)

    def tag(request) -> list[str]:
        return store.flow_tag_tenants(request.name)

    def model_version(request) -> list[str]:
        found = store.flow_model_tenants(request.job_id)
        if getattr(request, "tag", ""):
            found += store.flow_tag_tenants(request.tag)
        return found

    def task(request) -> list[str]:
        found = running_component(request.task_uid) if request.task_uid else None
        return [found[0].namespace] if found else []

    return {auth.JOB: job, auth.TABLE: table, auth.MODEL: model, auth.TAG: tag, auth.MODEL_VERSION: model_version,
            auth.TASK: task}
