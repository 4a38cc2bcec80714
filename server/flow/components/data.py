"""Instances: the numeric view of a DataTransform-shaped table (see base.py), and back to rows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from server.flow.components.base import ComponentError, Table


@dataclass
class Instances:
    sids: list[str]
    X: np.ndarray                 # (n, len(features)) float64
    y: np.ndarray | None          # (n,) float64 labels, None without a label column
    labels: list[str] | None      # the labels as written (for output tables)
    features: list[str]
    schema: dict
    weights: np.ndarray | None = None   # SampleWeight's per-row weights (schema "weight_name")

    @property
    def label_name(self) -> str | None:
        return self.schema.get("label_name") if self.y is not None else None

    def __len__(self) -> int:
        return len(self.sids)

    def rows(self) -> list[list[str]]:
        """Rows in the DataTransform layout: [sid, label?, features...]."""
        out = []
        for i, sid in enumerate(self.sids):
            head = [sid] if self.labels is None else [sid, self.labels[i]]
            out.append(head + [repr(float(v)) for v in self.X[i]])
        return out

    def with_features(self, X: np.ndarray) -> "Instances":
        return Instances(self.sids, X, self.y, self.labels, self.features, self.schema, self.weights)


WEIGHT_COLUMN = "sample_weight"


def with_weights(data: Instances, weights: np.ndarray) -> tuple[list[list[str]], dict]:
    """Rows and schema of an instances table carrying a weight column (after the label, before the features)."""
    schema = instance_schema(data.schema.get("sid", "id"), data.features, data.label_name)
    lead = 2 if data.labels is not None else 1
    schema["header"] = schema["header"][:lead - 1] + [WEIGHT_COLUMN] + schema["header"][lead - 1:]
    schema["weight_name"] = WEIGHT_COLUMN
    rows = [row[:lead] + [repr(float(w))] + row[lead:] for row, w in zip(data.rows(), weights)]
    return rows, schema


def instance_schema(sid: str, features: Sequence[str], label_name: str | None) -> dict:
    schema = {"sid": sid, "header": ([label_name] if label_name else []) + list(features), "features": list(features)}
    if label_name:
        schema["label_name"] = label_name
    return schema


SPARSE_COLUMN = "features"


def sparse_schema(schema: dict) -> dict:
    """A sparse instances table: the features travel in one column of "index:value" pairs (the nonzero
    ones, as FATE's SparseVector keeps them); `features` still names every feature, in index order."""
    return {**schema, "header": ([schema["label_name"]] if schema.get("label_name") else []) + [SPARSE_COLUMN],
            "sparse": True}


def sparse_rows(rows: list[list[str]], first_feature: int) -> list[list[str]]:
    out = []
    for row in rows:
        pairs = " ".join(f"{i}:{v}" for i, v in enumerate(row[first_feature:]) if float(v) != 0.0)
        out.append(row[:first_feature] + [pairs])
    return out


def _read_sparse(module: str, table: Table, schema: dict) -> Instances:
    features = list(schema.get("features") or [])
    label_col = 1 if schema.get("label_name") else None
    sids, labels, X = [], [] if label_col else None, []
    for row in table.rows():
        sids.append(row[0])
        if label_col:
            labels.append(row[1])
        dense = np.zeros(len(features))
        for pair in row[-1].split():
            i, _, v = pair.partition(":")
            dense[int(i)] = float(v)
        X.append(dense)
    y = np.array(labels, dtype=np.float64) if labels is not None else None
    return Instances(sids, np.array(X).reshape(len(sids), len(features)), y, labels, features, schema)


def read_instances(module: str, table: Table) -> Instances:
    """Parse a table written by DataTransform (or anything with the same schema) into arrays."""
    schema = dict(table.schema or {})
    if schema.get("sparse"):
        try:
            return _read_sparse(module, table, schema)
        except (ValueError, IndexError) as e:
            raise ComponentError(f"{module}: input table {table.namespace}.{table.name} has a malformed sparse "
                                 f"row ({e})") from None
    header = list(schema.get("header") or [])
    label_name = schema.get("label_name")
    features = list(schema.get("features") or [h for h in header if h != label_name])
    missing = [f for f in features if f not in header]
    if missing or (label_name and label_name not in header):
        raise ComponentError(f"{module}: input table {table.namespace}.{table.name} has a schema whose header lacks "
                             f"{', '.join(missing or [label_name])}; feed it the output of DataTransform")
    cols = [1 + header.index(f) for f in features]
    label_col = 1 + header.index(label_name) if label_name else None
    weight_col = 1 + header.index(schema["weight_name"]) if schema.get("weight_name") in header else None
    sids, labels, values, weights = [], [] if label_col else None, [], []
    for row in table.rows():
        sids.append(row[0])
        if label_col:
            labels.append(row[label_col])
        if weight_col:
            weights.append(row[weight_col])
        values.append([row[c] for c in cols])
    try:
        X = np.array(values, dtype=np.float64).reshape(len(sids), len(features))
        y = np.array(labels, dtype=np.float64) if labels is not None else None
        w = np.array(weights, dtype=np.float64) if weight_col else None
    except ValueError as e:
        raise ComponentError(f"{module}: input table {table.namespace}.{table.name} has a non-numeric value ({e}); "
                             "run DataTransform with missing_fill first") from None
    return Instances(sids, X, y, labels, features, schema, w)


def data_and_models(module: str, ctx) -> tuple[Instances, list[dict]]:
    """A feature transformer's inputs: its one `data` table read as instances, and its input models
    (given: a predict run applies that fitted model; none: this run fits one)."""
    return read_instances(module, one_input(module, ctx.input_tables("data"), "data")), ctx.input_model("model")


def one_input(module: str, tables: list[Table], key: str) -> Table:
    if len(tables) != 1:
        raise ComponentError(f"{module}: expects exactly one input table under '{key}', got {len(tables)}")
    return tables[0]
