"""FATE models and tags in the store (server/flow/models.py is their domain).

A model version is one row per party (model_id, model_version, role, party_id) plus that party's
component models, copied out of the train job's tasks when the job succeeds: the model outlives
its job. Tags name model versions. The SQL is each backend's (server/storage/flow.py); writes go
through the store's batches, one commit each.
"""
from __future__ import annotations

from ..storage import Batch, Store
from ..storage.flow import FLOW_COMPONENT_COLUMNS, FLOW_MODEL_COLUMNS

MODEL_COLS = FLOW_MODEL_COLUMNS  # the keys of a model row (dict)


def _model_row(row: dict) -> tuple:
    return tuple(row[c] for c in FLOW_MODEL_COLUMNS)


class ModelStore:
    def __init__(self, store: Store):
        self.store = store

    def _write(self, fill):
        b = self.store.batch()
        fill(b)
        return b.submit(wait=True)

    # ---------------------------------------------------------------- writing
    def register_job(self, rows: list[dict]):
        """A train job's model: its party rows, and its tasks' models copied in SQL (so the copy runs in
        the writer's order, after every model the tasks wrote)."""
        return self._write(lambda b: b.register_flow_models([_model_row(r) for r in rows]))

    def put_models(self, rows: list[dict], components: list[dict]):
        """New model versions (deploy, import, restore, migrate): rows and components in one commit; a
        party's earlier components are replaced (an import with force_update)."""
        return self._write(lambda b: b.put_flow_models([_model_row(r) for r in rows],
                                                       [tuple(c[k] for k in FLOW_COMPONENT_COLUMNS) for c in components]))

    def mark_loaded(self, keys: list[tuple], ts: int):
        return self._write(lambda b: b.mark_flow_models_loaded(keys, ts))

    def bind_service(self, keys: list[tuple], service_id: str, ts: int):
        """Adds the service id to each row's list (kept once, in binding order)."""
        def fill(b: Batch) -> None:
            for k in keys:
                b.bind_model_service(tuple(k), service_id, ts)
        return self._write(fill)

    def delete_model(self, model_id: str, model_version: str):
        return self._write(lambda b: b.delete_flow_model(model_id, model_version))

    # ---------------------------------------------------------------- reading
    def models(self, model_id: str = "", model_version: str = "", role: str = "", party_id: int = 0,
               scope: tuple[str, ...] | None = None) -> list[dict]:
        return self.store.flow_models(model_id, model_version, role, party_id, scope)

    def components(self, model_id: str, model_version: str, role: str = "", party_id: int = 0) -> list[dict]:
        return self.store.flow_model_components(model_id, model_version, role, party_id)

    # ---------------------------------------------------------------- tags
    def tags(self, name_contains: str = "", limit: int = 0, scope: tuple[str, ...] | None = None) -> list[dict]:
        return self.store.flow_tags(name_contains, limit, scope)

    def get_tag(self, name: str) -> dict | None:
        return self.store.flow_tag(name)

    def create_tag(self, name: str, description: str, ts: int, tenant: str):
        return self._write(lambda b: b.insert_flow_tag(name, description, ts, tenant))

    def update_tag(self, name: str, new_name: str, description: str):
        return self._write(lambda b: b.rename_flow_tag(name, new_name, description))

    def delete_tag(self, name: str):
        return self._write(lambda b: b.delete_flow_tag(name))

    def model_tags(self, model_version: str) -> list[dict]:
        return self.store.flow_model_tags(model_version)

    def tagged_models(self, tag: str) -> list[dict]:
        return self.store.flow_tagged_models(tag)

    def tag_model(self, tag: str, model_version: str, remove: bool):
        return self._write(lambda b: b.tag_flow_model(tag, model_version, remove))
