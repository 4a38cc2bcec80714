"""SampleWeight: a weight per row, from its class (`class_weight`: a dict label -> weight, or "balanced":
n / (classes * count of the label)) or from a feature column (`sample_weight_name`, optionally
`normalize`d to mean 1; the column stops being a feature). As in FATE, the column wins when both are
given, and without either the data passes unchanged. The weight travels as a column named in the
schema's `weight_name` (server/flow/components/data.py reads it); HeteroLR and HomoLR weight each row's
gradient by it. Predict mode (`input.model`) re-applies the saved class weights.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from server.flow.components import params as P
from server.flow.components.base import Component, ComponentContext, ComponentError
from server.flow.components.data import Instances, one_input, read_instances, with_weights

MODULE = "SampleWeight"


class SampleWeight(Component):
    module = MODULE
    roles = ("guest", "host", "local")
    defaults = {"class_weight": None, "sample_weight_name": None, "normalize": False}

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        cw = p["class_weight"]
        if isinstance(cw, str):
            p["class_weight"] = P.choice(MODULE, "class_weight", cw, ["balanced"])
        elif isinstance(cw, dict):
            for k, v in cw.items():
                P.number(MODULE, f"class_weight.{k}", v)
        elif cw is not None:
            raise ComponentError(f"{MODULE}: class_weight must be \"balanced\", an object label -> weight, or null")
        if p["sample_weight_name"] is not None and not isinstance(p["sample_weight_name"], str):
            raise ComponentError(f"{MODULE}: sample_weight_name must be a column name")
        P.boolean(MODULE, "normalize", p["normalize"])

    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        table = one_input(MODULE, ctx.input_tables("data"), "data")
        data = read_instances(MODULE, table)
        models = ctx.input_model("model")
        p = dict(self.params)
        if models:
            saved = models[0]["model"]
            p = {"class_weight": saved.get("class_weight") or None, "sample_weight_name": saved.get("sample_weight_name")
                 or None, "normalize": saved.get("normalize", False)}
        if p["sample_weight_name"] is None and p["class_weight"] is None:
            ctx.write_table(table.rows(), table.schema)
            return
        weighted, class_weight = self.weigh(data, p)
        ctx.write_table(*weighted)
        ctx.save_model({"class_weight": {k: float(v) for k, v in (class_weight or {}).items()},
                        "sample_weight_name": p["sample_weight_name"] or "", "normalize": p["normalize"]},
                       {"need_run": True})
        ctx.summary({"class_weight": class_weight, "sample_weight_name": p["sample_weight_name"],
                     "rows": len(data)})

    @staticmethod
    def weigh(data: Instances, p: dict) -> tuple[tuple[list, dict], dict | None]:
        name = p["sample_weight_name"]
        if name:
            if name not in data.features:
                raise ComponentError(f"{MODULE}: sample_weight_name {name!r} is not a feature "
                                     f"(features: {', '.join(data.features)})")
            j = data.features.index(name)
            weights = data.X[:, j].copy()
            if p["normalize"] and len(weights):
                weights = weights / (weights.sum() / len(weights))
            kept = [i for i in range(len(data.features)) if i != j]
            data = Instances(data.sids, data.X[:, kept], data.y, data.labels, [data.features[i] for i in kept],
                             data.schema)
            return with_weights(data, weights), None
        if data.labels is None:
            raise ComponentError(f"{MODULE}: class_weight needs labelled data (DataTransform with_label: true)")
        class_weight = p["class_weight"]
        if class_weight == "balanced":
            counts = Counter(_label_key(v) for v in data.labels)
            class_weight = {k: len(data) / (len(counts) * c) for k, c in counts.items()}
        table = {_label_key(k): float(v) for k, v in class_weight.items()}
        weights = np.array([table.get(_label_key(v), 1.0) for v in data.labels])
        return with_weights(data, weights), class_weight


def _label_key(value) -> str:
    try:
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    except (TypeError, ValueError):
        return str(value)
