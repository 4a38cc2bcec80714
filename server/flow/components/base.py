"""The contract between a FATE component and taskhub.

A component is a class; `run(ctx)` does its work for one (role, party) of one job. Everything it
reads and writes goes through `ctx` (a `ComponentContext`), so the same class runs inside a
taskhub worker (server/flow/runtime.py, talking to the server over gRPC) or in any other
implementation of the context.

Tables are tabular text: a row is a list of strings, `[sid, v1, v2, ...]`, and the schema says
what the columns are: `{"sid": "id", "header": ["y", "x0", ...], "label_name": "y", ...}`
(`header` names every column after the id). Numbers travel as their text and are parsed where
they are used (`Table.arrays()`).
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol, Sequence


class ComponentError(Exception):
    """A user-facing failure (bad parameter, missing input): its message becomes the task's error."""


class Table(Protocol):
    namespace: str
    name: str
    schema: dict          # {"sid", "header": [...], "label_name"?, ...}
    count: int

    @property
    def header(self) -> list[str]: ...

    def rows(self) -> Iterator[list[str]]:
        """Every row, in the order written: [sid, v1, v2, ...]."""


class Federation(Protocol):
    """Objects between the parties of one job. `name` + `tag` identify one exchange, so one name can
    be used once per iteration (tag "iter_3"). Objects are anything pickle can carry."""

    def remote(self, obj: Any, name: str, tag: str, role: str, idx: int = -1) -> None:
        """Send `obj` to the party at index `idx` of `role` (-1: every party of the role)."""

    def get(self, name: str, tag: str, role: str, idx: int = -1) -> list[Any]:
        """Block until the object(s) sent under (name, tag) by `role` (index `idx`, or -1: every
        party of the role, in party order) have arrived; returns them as a list. Raises if the job
        is cancelled or a peer failed."""


class ComponentContext(Protocol):
    job_id: str
    component_name: str
    module: str
    role: str                         # guest | host | arbiter | local
    party_id: int
    roles: dict[str, list[int]]       # the job's conf "role": {"guest": [9999], "host": [10000], ...}
    params: dict                      # this component's parameters for this role/party, merged
    job_parameters: dict              # the job's job_parameters.common merged with this role's
    federation: Federation

    @property
    def party_index(self) -> int:
        """Index of this party in roles[role]."""

    # inputs -----------------------------------------------------------------------------
    def read_table(self, namespace: str, name: str) -> Table:
        """Any stored table by name (the Reader's way in)."""

    def input_tables(self, key: str = "data") -> list[Table]:
        """Input data by DSL key (data | train_data | validate_data | test_data); [] if none."""

    def input_model(self, key: str = "model") -> list[dict]:
        """Input models (`input.model` / `isometric_model`): each {"model": ..., "meta": ..., "component": name}."""

    # outputs ----------------------------------------------------------------------------
    def write_table(self, rows: Iterable[Sequence[Any]], schema: dict, name: str = "data") -> Table:
        """Store an output data table (values are str()-ed); readable by downstream components."""

    def save_model(self, model: dict, meta: dict, name: str = "model") -> None:
        """Store the output model (JSON-able) and its meta."""

    def metric(self, namespace: str, name: str, data: Sequence[tuple[Any, Any]], meta: dict | None = None) -> None:
        """Append data points [(x, y), ...] to metric namespace/name; `meta` (e.g. {"metric_type": "LOSS",
        "unit_name": "iters"}) replaces the stored one when given."""

    def summary(self, values: dict) -> None:
        """Merge into this task's summary (component.get_summary)."""

    # the task -----------------------------------------------------------------------------
    def log(self, message: str) -> None: ...
    def progress(self, percent: int) -> None: ...
    @property
    def cancelled(self) -> bool: ...
    def check_cancelled(self) -> None: ...


class Component:
    """Base of every component. Subclasses set `module` and implement `run`."""

    module: str = ""                                   # the DSL module name, e.g. "HeteroLR"
    roles: Sequence[str] = ("guest", "host", "arbiter", "local")  # elsewhere its tasks are `pass`
    # Parameter names with their defaults (FATE's names). Unknown parameters are refused.
    defaults: dict = {}

    def __init__(self, params: dict):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown and self.defaults is not None:
            raise ComponentError(f"{self.module}: unknown parameter(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(self.defaults)) or 'none'}")
        self.params = {**self.defaults, **params}

    def run(self, ctx: ComponentContext) -> None:
        raise NotImplementedError
