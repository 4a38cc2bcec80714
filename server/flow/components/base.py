"""The contract between a FATE component and taskhub.

A component is a class; `run(ctx)` does its work for one (role, party) of one job. Everything it
reads and writes goes through `ctx` (a `ComponentContext`), so the same class runs inside a
taskhub worker (server/flow/runtime.py, talking to the server over gRPC) or in any other
implementation of the context.

Tables are tabular text: a row is a list of strings, `[sid, v1, v2, ...]`, and the schema says
what the columns are: `{"sid": "id", "header": ["y", "x0", ...], "label_name": "y", ...}`
(`header` names every column after the id). Numbers travel as their text and are parsed where
they are used (server/flow/components/data.py: `read_instances`).

Instances tables (what DataTransform writes, and what every downstream component reads and writes
back in the same shape):
    schema = {"sid": "id",                      # name of the id column (column 0 of every row)
              "header": ["y", "x0", "x1", ...], # every column after the id: the label first, if any
              "label_name": "y",                # only when the table has a label
              "features": ["x0", "x1", ...]}    # the feature columns, in order
    row    = [sid, label?, x0, x1, ...]          # numbers as repr(float) text; labels as label_type
Prediction tables (HeteroLR, HomoLR; read by Evaluation) follow FATE's predict output:
    schema = {"sid": "id", "header": ["label", "predict_result", "predict_score", "predict_detail", "type"]}
    row    = [sid, label, predict_result, predict_score, predict_detail (JSON {"0": p0, "1": p1}),
              type ("train" | "validate" | "test")]

A table may also carry `source`, the name of the component that wrote it (Evaluation names its
metrics after it, falling back to the table's name). A component runs in predict mode when it is
given `input.model`, or when job_parameters["job_type"] == "predict" (the arbiter of a hetero/homo
LR gets no data; it only needs to know it has nothing to do).

Saved models (`save_model(model, meta)`) are JSON dicts with the field names of FATE's protobuf
messages: LRModelParam / LRModelMeta (HeteroLR, HomoLR), DataIOParam / DataIOMeta (DataTransform),
ScaleParam / ScaleMeta (FeatureScale); predict mode reads them back from `input_model()`.

Every component accepts FATE's common parameter `need_run` (default true); with `need_run: false`
it does nothing but pass its first input table through (`Component.passthrough`), as FATE does.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Iterator, Protocol, Sequence


def encode_row(row) -> str:
    """A row as one line of CSV: plain values joined by commas, CSV-quoted where a value needs it."""
    values = [v if isinstance(v, str) else str(v) for v in row]
    if any(("," in v or '"' in v or "\n" in v) for v in values):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(values)
        return buf.getvalue()
    return ",".join(values)


def decode_row(line: str) -> list[str]:
    """The inverse of encode_row (plain lines take the fast path)."""
    if '"' in line:
        return next(csv.reader([line]))
    return line.split(",")


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
        if not isinstance(params, dict):
            raise ComponentError(f"{self.module}: parameters must be an object, not {params!r}")
        params = dict(params)
        self.need_run = params.pop("need_run", True)
        if not isinstance(self.need_run, bool):
            raise ComponentError(f"{self.module}: need_run must be true or false, not {self.need_run!r}")
        unknown = sorted(set(params) - set(self.defaults))
        if unknown and self.defaults is not None:
            raise ComponentError(f"{self.module}: unknown parameter(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(self.defaults)) or 'none'}")
        self.params = {**self.defaults, **params}

    def run(self, ctx: ComponentContext) -> None:
        raise NotImplementedError

    def passthrough(self, ctx: ComponentContext) -> None:
        """What `need_run: false` does: the first input table (if any) becomes the output unchanged."""
        for key in ("data", "train_data", "test_data", "validate_data"):
            tables = ctx.input_tables(key)
            if tables:
                ctx.write_table(tables[0].rows(), tables[0].schema)
                return
