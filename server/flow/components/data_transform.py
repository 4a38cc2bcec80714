"""DataTransform: a Reader table (dense, CSV-like) -> an instances table (schema in base.py).

Train mode learns the layout (label column, features, fill values) from its parameters and the
input; predict mode (an `input.model` from a train run) applies that saved layout to new data and
ignores its own parameters, as FATE does.
"""
from __future__ import annotations

import math

from server.flow.components import params as P
from server.flow.components.base import Component, ComponentContext, ComponentError, Table
from server.flow.components.data import instance_schema, one_input, sparse_rows, sparse_schema

MODULE = "DataTransform"
# What counts as missing when `missing_impute` is not given (compared case-insensitively).
DEFAULT_MISSING = ["", "na", "nan", "null", "none", "?"]
FILL_METHODS = [None, "min", "max", "mean", "designated"]
LABEL_TYPES = ["int", "int64", "long", "float", "float64", "str"]


class DataTransform(Component):
    module = MODULE
    roles = ("guest", "host", "local")
    defaults = {
        "input_format": "dense", "delimitor": ",", "data_type": "float64", "exclusive_data_type": None,
        "tag_with_value": False, "tag_value_delimitor": ":",
        "missing_fill": False, "default_value": 0, "missing_fill_method": None, "missing_impute": None,
        "outlier_replace": False, "outlier_replace_method": None, "outlier_impute": None,
        "outlier_replace_value": 0,
        "with_label": False, "label_name": "y", "label_type": "int", "output_format": "dense",
        "with_match_id": False, "match_id_name": "", "match_id_index": 0,
    }

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        P.choice(MODULE, "input_format", p["input_format"], ["dense"])
        p["output_format"] = P.choice(MODULE, "output_format", p["output_format"], ["dense", "sparse"])
        P.choice(MODULE, "data_type", p["data_type"], ["float64", "float", "int", "int64", "long"])
        if p["exclusive_data_type"] is not None:
            raise ComponentError(f"{MODULE}: exclusive_data_type is not supported (every feature is numeric)")
        if P.boolean(MODULE, "with_match_id", p["with_match_id"]):
            raise ComponentError(f"{MODULE}: with_match_id is not supported; the id column is the match id")
        P.boolean(MODULE, "with_label", p["with_label"])
        if p["with_label"]:
            if not isinstance(p["label_name"], str) or not p["label_name"]:
                raise ComponentError(f"{MODULE}: label_name must be a column name, not {p['label_name']!r}")
            p["label_type"] = P.choice(MODULE, "label_type", p["label_type"], LABEL_TYPES)
        for flag, method, impute, value in (("missing_fill", "missing_fill_method", "missing_impute", "default_value"),
                                            ("outlier_replace", "outlier_replace_method", "outlier_impute",
                                             "outlier_replace_value")):
            P.boolean(MODULE, flag, p[flag])
            p[method] = P.choice(MODULE, method, p[method], FILL_METHODS)
            if p[impute] is not None and not isinstance(p[impute], list):
                raise ComponentError(f"{MODULE}: {impute} must be a list of values or null, not {p[impute]!r}")
            if p[method] is not None and not p[flag]:
                raise ComponentError(f"{MODULE}: {method}={p[method]!r} is set but {flag} is false; "
                                     f"set {flag}: true or drop {method}")
        if p["outlier_replace"] and not p["outlier_impute"]:
            raise ComponentError(f"{MODULE}: outlier_replace needs outlier_impute, the values to treat as outliers")

    # ------------------------------------------------------------------------------------------
    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        table = one_input(MODULE, ctx.input_tables("data"), "data")
        models = ctx.input_model("model")
        if models:
            layout = layout_from_saved(models[0]["model"], models[0]["meta"])
            ctx.log(f"{MODULE}: predict mode, layout from {models[0].get('component')}")
        else:
            layout = self.learn_layout(table)
        rows, schema = transform(table, layout)
        ctx.write_table(rows, schema)
        ctx.summary({"features": len(layout["features"]), "rows": len(rows), "with_label": layout["with_label"]})
        if not models:
            ctx.save_model(*saved_from_layout(layout, self.params))
        ctx.log(f"{MODULE}: {len(rows)} rows, {len(layout['features'])} features")

    def learn_layout(self, table: Table) -> dict:
        """What the model saves: enough to transform any later table the same way."""
        p = self.params
        header = list(table.schema.get("header") or [])
        if not header:
            raise ComponentError(f"{MODULE}: input table {table.namespace}.{table.name} has no header in its schema")
        label_name = p["label_name"] if p["with_label"] else None
        if label_name and label_name not in header:
            raise ComponentError(f"{MODULE}: label_name {label_name!r} is not a column of "
                                 f"{table.namespace}.{table.name} (columns: {', '.join(header)})")
        features = [h for h in header if h != label_name]
        missing_impute = [str(v) for v in p["missing_impute"]] if p["missing_impute"] is not None else DEFAULT_MISSING
        outlier_impute = [str(v) for v in p["outlier_impute"] or []]
        layout = {
            "sid": table.schema.get("sid", "id"), "features": features,
            "with_label": bool(label_name), "label_name": label_name, "label_type": p["label_type"],
            "data_type": p["data_type"],
            "missing_fill": p["missing_fill"], "missing_impute": missing_impute, "missing_fill_values": None,
            "outlier_replace": p["outlier_replace"], "outlier_impute": outlier_impute, "outlier_replace_values": None,
            "output_format": p["output_format"],
        }
        if p["missing_fill"] or p["outlier_replace"]:
            stats = column_stats(table, header, features, set(v.lower() for v in missing_impute) | set(outlier_impute))
            if p["missing_fill"]:
                layout["missing_fill_values"] = fill_values(features, p["missing_fill_method"], p["default_value"],
                                                            stats, "default_value")
            if p["outlier_replace"]:
                layout["outlier_replace_values"] = fill_values(features, p["outlier_replace_method"],
                                                               p["outlier_replace_value"], stats,
                                                               "outlier_replace_value")
        return layout


def saved_from_layout(layout: dict, p: dict) -> tuple[dict, dict]:
    """The layout as FATE saves it: a DataIOParam-shaped model and a DataIOMeta-shaped meta."""
    def replace_values(values):
        return {f: repr(v) for f, v in (values or {}).items()}

    model = {"header": layout["features"], "sid_name": layout["sid"], "label_name": layout["label_name"] or "",
             "imputer_param": {"missing_replace_value": replace_values(layout["missing_fill_values"]),
                               "missing_value_ratio": {}},
             "outlier_param": {"outlier_replace_value": replace_values(layout["outlier_replace_values"]),
                               "outlier_value_ratio": {}}}
    meta = {"input_format": "dense", "delimitor": p["delimitor"], "data_type": layout["data_type"],
            "tag_with_value": False, "tag_value_delimitor": p["tag_value_delimitor"],
            "with_label": layout["with_label"], "label_name": layout["label_name"] or "",
            "label_type": layout["label_type"], "output_format": layout["output_format"],
            "imputer_meta": {"is_imputer": layout["missing_fill"], "strategy": p["missing_fill_method"] or "designated",
                             "missing_value": layout["missing_impute"]},
            "outlier_meta": {"is_outlier": layout["outlier_replace"],
                             "strategy": p["outlier_replace_method"] or "designated",
                             "outlier_value": layout["outlier_impute"]},
            "need_run": True, "exclusive_data_type": {}}
    return model, meta


def layout_from_saved(model: dict, meta: dict) -> dict:
    def values(saved: dict, enabled: bool):
        return {f: float(v) for f, v in saved.items()} if enabled else None

    imputer, outlier = meta["imputer_meta"], meta["outlier_meta"]
    return {"sid": model["sid_name"], "features": list(model["header"]), "with_label": meta["with_label"],
            "label_name": meta["label_name"] or None, "label_type": meta["label_type"], "data_type": meta["data_type"],
            "missing_fill": imputer["is_imputer"], "missing_impute": list(imputer["missing_value"]),
            "missing_fill_values": values(model["imputer_param"]["missing_replace_value"], imputer["is_imputer"]),
            "outlier_replace": outlier["is_outlier"], "outlier_impute": list(outlier["outlier_value"]),
            "outlier_replace_values": values(model["outlier_param"]["outlier_replace_value"], outlier["is_outlier"]),
            "output_format": meta.get("output_format", "dense")}


def column_stats(table: Table, header: list[str], features: list[str], skip: set[str]) -> dict[str, dict]:
    """min / max / mean of each feature over the values that are neither missing nor outliers."""
    cols = [1 + header.index(f) for f in features]
    acc = {f: [math.inf, -math.inf, 0.0, 0] for f in features}
    for row in table.rows():
        for f, c in zip(features, cols):
            text = row[c].strip()
            if text.lower() in skip or text in skip:
                continue
            try:
                v = float(text)
            except ValueError:
                continue
            a = acc[f]
            a[0], a[1], a[2], a[3] = min(a[0], v), max(a[1], v), a[2] + v, a[3] + 1
    return {f: {"min": a[0], "max": a[1], "mean": a[2] / a[3]} if a[3] else {"min": 0.0, "max": 0.0, "mean": 0.0}
            for f, a in acc.items()}


def fill_values(features: list[str], method: str | None, designated, stats: dict, value_name: str) -> dict[str, float]:
    """The replacement value per feature: a statistic, or the designated value (one, or one per feature)."""
    if method in ("min", "max", "mean"):
        return {f: stats[f][method] for f in features}
    if isinstance(designated, list):
        if len(designated) != len(features):
            raise ComponentError(f"{MODULE}: {value_name} has {len(designated)} values but there are "
                                 f"{len(features)} features")
        values = designated
    else:
        values = [designated] * len(features)
    try:
        return {f: float(v) for f, v in zip(features, values)}
    except (TypeError, ValueError):
        raise ComponentError(f"{MODULE}: {value_name} must be numeric, not {designated!r}") from None


def convert_label(text: str, label_type: str, sid: str) -> str:
    try:
        if label_type in ("int", "int64", "long"):
            return str(int(float(text)))
        if label_type in ("float", "float64"):
            return repr(float(text))
        return text
    except ValueError:
        raise ComponentError(f"{MODULE}: row {sid}: label {text!r} is not of label_type {label_type}") from None


def transform(table: Table, layout: dict) -> tuple[list[list[str]], dict]:
    """Apply a layout to a table: pick the label and features by name, replace missing values/outliers."""
    header = list(table.schema.get("header") or [])
    absent = [f for f in layout["features"] if f not in header]
    if absent:
        raise ComponentError(f"{MODULE}: input table {table.namespace}.{table.name} lacks feature column(s) "
                             f"{', '.join(absent)} of the model")
    label_name = layout["label_name"] if layout["with_label"] and layout["label_name"] in header else None
    cols = [1 + header.index(f) for f in layout["features"]]
    label_col = 1 + header.index(label_name) if label_name else None
    missing = set(v.lower() for v in layout["missing_impute"])
    outliers = set(layout["outlier_impute"] or [])
    outlier_numbers = set(_numbers(outliers))
    miss_fill, out_fill = layout["missing_fill_values"], layout["outlier_replace_values"]
    as_int = layout["data_type"] in ("int", "int64", "long")
    rows = []
    for row in table.rows():
        sid = row[0]
        out = [sid]
        if label_col:
            out.append(convert_label(row[label_col].strip(), layout["label_type"], sid))
        for f, c in zip(layout["features"], cols):
            text = row[c].strip() if c < len(row) else ""
            if out_fill is not None and (text in outliers or (outlier_numbers and _number(text) in outlier_numbers)):
                v = out_fill[f]
            elif text.lower() in missing:
                if miss_fill is None:
                    raise ComponentError(f"{MODULE}: row {sid}, column {f}: missing value {text!r}; "
                                         "set missing_fill: true (and missing_fill_method) to fill it")
                v = miss_fill[f]
            else:
                try:
                    v = float(text)
                except ValueError:
                    raise ComponentError(f"{MODULE}: row {sid}, column {f}: {text!r} is not a number; add it to "
                                         "missing_impute (with missing_fill) or outlier_impute") from None
            out.append(repr(float(int(v))) if as_int else repr(v))
        rows.append(out)
    schema = instance_schema(layout["sid"], layout["features"], label_name)
    if layout["output_format"] == "sparse":
        return sparse_rows(rows, 2 if label_col else 1), sparse_schema(schema)
    return rows, schema


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _numbers(texts) -> list[float]:
    return [v for v in (_number(t) for t in texts) if v is not None]
