"""FeatureScale: min_max_scale or standard_scale of chosen feature columns, each party on its own data.

Columns: `scale_col_indexes` (-1: every feature; else a list of feature indexes) united with
`scale_names`. `feat_upper`/`feat_lower` clip first (mode "normal": values; mode "cap": quantiles in
[0, 1] of the column). Predict mode (`input.model`) applies the saved per-column statistics.
"""
from __future__ import annotations

import numpy as np

from server.flow.components import params as P
from server.flow.components.base import Component, ComponentContext, ComponentError
from server.flow.components.data import data_and_models, instance_schema

MODULE = "FeatureScale"


class FeatureScale(Component):
    module = MODULE
    roles = ("guest", "host", "local")
    defaults = {"method": "standard_scale", "mode": "normal", "scale_col_indexes": -1, "scale_names": None,
                "feat_upper": None, "feat_lower": None, "with_mean": True, "with_std": True}

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        p["method"] = P.choice(MODULE, "method", p["method"], ["min_max_scale", "standard_scale"])
        p["mode"] = P.choice(MODULE, "mode", p["mode"], ["normal", "cap"])
        if p["scale_col_indexes"] != -1 and not (isinstance(p["scale_col_indexes"], list) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in p["scale_col_indexes"])):
            raise ComponentError(f"{MODULE}: scale_col_indexes must be -1 or a list of column indexes")
        p["scale_names"] = p["scale_names"] or []
        if not isinstance(p["scale_names"], list) or not all(isinstance(n, str) for n in p["scale_names"]):
            raise ComponentError(f"{MODULE}: scale_names must be a list of column names")
        P.boolean(MODULE, "with_mean", p["with_mean"])
        P.boolean(MODULE, "with_std", p["with_std"])
        for bound in ("feat_upper", "feat_lower"):
            v = p[bound]
            if isinstance(v, list):
                if p["mode"] == "cap":
                    raise ComponentError(f"{MODULE}: {bound} as a list needs mode normal, not cap")
                for x in v:
                    P.number(MODULE, bound, x)
            elif v is not None:
                P.number(MODULE, bound, v)
                if p["mode"] == "cap" and not 0 <= v <= 1:
                    raise ComponentError(f"{MODULE}: with mode cap, {bound} is a quantile in [0, 1], not {v}")
        if (isinstance(p["feat_upper"], (int, float)) and isinstance(p["feat_lower"], (int, float))
                and p["feat_lower"] > p["feat_upper"]):
            raise ComponentError(f"{MODULE}: feat_lower {p['feat_lower']} is above feat_upper {p['feat_upper']}")

    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        data, models = data_and_models(MODULE, ctx)
        model, meta = (models[0]["model"], models[0]["meta"]) if models else self.fit(data)
        scaled = data.with_features(apply(data, model, meta))
        ctx.write_table(scaled.rows(), instance_schema(data.schema.get("sid", "id"), data.features, data.label_name))
        if not models:
            ctx.save_model(model, meta)
        ctx.summary({"method": meta["method"], "scaled_columns": meta["scale_column"]})

    def columns(self, features: list[str]) -> list[str]:
        p = self.params
        idx = range(len(features)) if p["scale_col_indexes"] == -1 else p["scale_col_indexes"]
        bad = [i for i in idx if not 0 <= i < len(features)]
        unknown = [n for n in p["scale_names"] if n not in features]
        if bad or unknown:
            raise ComponentError(f"{MODULE}: no feature column {', '.join(map(str, bad + unknown))} "
                                 f"(features: {', '.join(features)})")
        chosen = {features[i] for i in idx} | set(p["scale_names"])
        return [f for f in features if f in chosen]

    def fit(self, data) -> tuple[dict, dict]:
        """The model and meta, with FATE's ScaleParam / ScaleMeta field names."""
        p = self.params
        names = self.columns(data.features)
        stats = {}
        for name in names:
            col = data.X[:, data.features.index(name)]
            lower = self._bound(p["feat_lower"], col, names.index(name), np.min)
            upper = self._bound(p["feat_upper"], col, names.index(name), np.max)
            clipped = np.clip(col, lower, upper) if len(col) else col
            stats[name] = {"column_upper": upper, "column_lower": lower,
                           "mean": float(clipped.mean()) if len(col) else 0.0,
                           "std": float(clipped.std()) if len(col) else 1.0}
        model = {"col_scale_param": stats, "header": data.features}
        meta = {"method": p["method"], "mode": p["mode"], "area": "", "scale_column": names,
                "feat_upper": _texts(p["feat_upper"]), "feat_lower": _texts(p["feat_lower"]),
                "with_mean": p["with_mean"], "with_std": p["with_std"], "need_run": True}
        return model, meta

    def _bound(self, setting, col: np.ndarray, i: int, default) -> float:
        if setting is None:
            return float(default(col)) if len(col) else 0.0
        value = setting[i] if isinstance(setting, list) else setting
        if self.params["mode"] == "cap":
            return float(np.quantile(col, value)) if len(col) else 0.0
        return float(value)


def _texts(bound) -> list[str]:
    if bound is None:
        return []
    return [str(b) for b in bound] if isinstance(bound, list) else [str(bound)]


def apply(data, model: dict, meta: dict) -> np.ndarray:
    absent = [n for n in meta["scale_column"] if n not in data.features]
    if absent:
        raise ComponentError(f"{MODULE}: input lacks column(s) {', '.join(absent)} the model scales")
    X = data.X.copy()
    for name in meta["scale_column"]:
        s, j = model["col_scale_param"][name], data.features.index(name)
        lower, upper = s["column_lower"], s["column_upper"]
        col = np.clip(X[:, j], lower, upper)
        if meta["method"] == "min_max_scale":
            X[:, j] = (col - lower) / ((upper - lower) or 1.0)
        else:
            mean = s["mean"] if meta["with_mean"] else 0.0
            std = s["std"] if meta["with_std"] and s["std"] else 1.0
            X[:, j] = (col - mean) / std
    return X
