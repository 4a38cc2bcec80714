"""OneHotEncoder: each chosen column (transform_col_indexes, -1 for all, and transform_col_names)
becomes one 0/1 column per value seen in training, named <column>_<value>; other columns stay, in
front. Each party encodes its own columns. Predict mode (`input.model`) uses the saved values, so a
value not seen in training gives all zeros, as in FATE.
"""
from __future__ import annotations

import numpy as np

from server.flow.components.base import Component, ComponentContext, ComponentError
from server.flow.components.binning import check_columns, pick_columns
from server.flow.components.data import data_and_models, instance_schema

MODULE = "OneHotEncoder"
MAX_VALUES = 1024       # distinct values per column: beyond this the column is not categorical


class OneHotEncoder(Component):
    module = MODULE
    roles = ("guest", "host", "local")
    defaults = {"transform_col_indexes": -1, "transform_col_names": None}

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        check_columns(MODULE, "transform_col_indexes", p["transform_col_indexes"], "transform_col_names",
                      p["transform_col_names"])

    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        data, models = data_and_models(MODULE, ctx)
        if models:
            col_map = models[0]["model"]["col_map"]
        else:
            p = self.params
            cols = pick_columns(MODULE, data.features, p["transform_col_indexes"], p["transform_col_names"])
            col_map = {}
            for f in cols:
                values = np.unique(data.X[:, data.features.index(f)])
                if len(values) > MAX_VALUES:
                    raise ComponentError(f"{MODULE}: column {f} has {len(values)} distinct values (more than "
                                         f"{MAX_VALUES}); is it categorical?")
                names = [_text(v) for v in values]
                col_map[f] = {"values": names, "transformed_headers": [f"{f}_{n}" for n in names]}
            ctx.save_model({"col_map": col_map, "header": data.features}, {"transform_col_names": cols})
            ctx.summary({"transformed": {f: len(m["values"]) for f, m in col_map.items()}})
        absent = [f for f in col_map if f not in data.features]
        if absent:
            raise ComponentError(f"{MODULE}: input lacks column(s) {', '.join(absent)} of the model")
        kept = [f for f in data.features if f not in col_map]
        blocks = [data.X[:, [data.features.index(f) for f in kept]]]
        headers = list(kept)
        for f, m in col_map.items():
            column = np.array([_text(v) for v in data.X[:, data.features.index(f)]])
            blocks.append(np.stack([(column == v).astype(np.float64) for v in m["values"]], axis=1)
                          if m["values"] else np.zeros((len(data), 0)))
            headers += m["transformed_headers"]
        out = data.with_features(np.hstack(blocks) if blocks else data.X)
        out.features = headers
        ctx.write_table(out.rows(), instance_schema(data.schema.get("sid", "id"), headers, data.label_name))


def _text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))
