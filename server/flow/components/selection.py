"""HeteroFeatureSelection: keep the features that pass each filter of `filter_methods`, in order.

Filters: "manually" (filter_out_indexes / filter_out_names / left_col_indexes / left_col_names),
"iv_value_thres" (IV >= value_threshold; host features against host_thresholds when given),
"iv_percentile" (the top percentile_threshold of the IVs: IV >= that percentile of all IVs) and
"iv_top_k" (the k highest IVs). The IVs come from a HeteroFeatureBinning model given as
`isometric_model`. The guest holds every IV (the hosts' by anonymous name) and decides for every party
unless `local_only`: it sends each host the anonymous names of its features that stay. Predict mode
(`input.model`) keeps the saved columns.
"""
from __future__ import annotations

import numpy as np

from server.flow.components import params as P
from server.flow.components.base import Component, ComponentContext, ComponentError
from server.flow.components.binning import check_columns, pick_columns
from server.flow.components.data import data_and_models, instance_schema

MODULE = "HeteroFeatureSelection"
FILTERS = ["manually", "iv_value_thres", "iv_percentile", "iv_top_k"]
IV_VALUE_DEFAULTS = {"value_threshold": 0.0, "host_thresholds": None, "local_only": False}
IV_PERCENTILE_DEFAULTS = {"percentile_threshold": 1.0, "local_only": False}
IV_TOP_K_DEFAULTS = {"k": 10, "local_only": False}
MANUALLY_DEFAULTS = {"filter_out_indexes": None, "filter_out_names": None, "left_col_indexes": None,
                     "left_col_names": None}


class HeteroFeatureSelection(Component):
    module = MODULE
    roles = ("guest", "host")
    defaults = {"select_col_indexes": -1, "select_names": None, "filter_methods": None,
                "iv_value_param": None, "iv_percentile_param": None, "iv_top_k_param": None, "manually_param": None,
                "unique_param": None, "variance_coe_param": None, "outlier_param": None,
                "percentage_value_param": None, "statistic_param": None, "psi_param": None, "sbt_param": None,
                "vif_param": None, "correlation_param": None, "use_anonymous": False}

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        check_columns(MODULE, "select_col_indexes", p["select_col_indexes"], "select_names", p["select_names"])
        methods = p["filter_methods"] or ["manually"]
        if not isinstance(methods, list):
            raise ComponentError(f"{MODULE}: filter_methods must be a list")
        p["filter_methods"] = [P.choice(MODULE, "filter_methods", m, FILTERS) for m in methods]
        p["iv_value_param"] = P.merge_nested(MODULE, "iv_value_param", p["iv_value_param"], IV_VALUE_DEFAULTS)
        P.number(MODULE, "iv_value_param.value_threshold", p["iv_value_param"]["value_threshold"])
        p["iv_percentile_param"] = P.merge_nested(MODULE, "iv_percentile_param", p["iv_percentile_param"],
                                                  IV_PERCENTILE_DEFAULTS)
        pct = P.number(MODULE, "iv_percentile_param.percentile_threshold",
                       p["iv_percentile_param"]["percentile_threshold"], minimum=0)
        if pct > 1:
            raise ComponentError(f"{MODULE}: iv_percentile_param.percentile_threshold must be in [0, 1], not {pct}")
        p["iv_top_k_param"] = P.merge_nested(MODULE, "iv_top_k_param", p["iv_top_k_param"], IV_TOP_K_DEFAULTS)
        P.number(MODULE, "iv_top_k_param.k", p["iv_top_k_param"]["k"], minimum=1, integer=True)
        p["manually_param"] = P.merge_nested(MODULE, "manually_param", p["manually_param"], MANUALLY_DEFAULTS)
        for name in ("unique_param", "variance_coe_param", "outlier_param", "percentage_value_param",
                     "statistic_param", "psi_param", "sbt_param", "vif_param", "correlation_param"):
            if p[name]:
                raise ComponentError(f"{MODULE}: {name} (its filter) is not supported; filters: {', '.join(FILTERS)}")

    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        data, models = data_and_models(MODULE, ctx)
        if models:
            left = [f for f in models[0]["model"]["left_cols"] if f in data.features]
        else:
            left, results = self.select(ctx, data.features)
            ctx.save_model({"left_cols": left, "results": results, "header": data.features},
                           {"filter_methods": self.params["filter_methods"]})
            ctx.summary({"left_cols": left, "filters": results})
        keep = [data.features.index(f) for f in left]
        out = data.with_features(data.X[:, keep])
        out.features = left
        ctx.write_table(out.rows(), instance_schema(data.schema.get("sid", "id"), left, data.label_name))

    def select(self, ctx: ComponentContext, features: list[str]) -> tuple[list[str], list[dict]]:
        p, fed = self.params, ctx.federation
        chosen = pick_columns(MODULE, features, p["select_col_indexes"], p["select_names"])
        binning = ctx.input_model("isometric_model")
        needs_iv = any(m.startswith("iv_") for m in p["filter_methods"])
        if needs_iv and not binning:
            raise ComponentError(f"{MODULE}: IV filters need isometric_model: a HeteroFeatureBinning model")
        if ctx.role == "host":
            anonymous = (binning[0]["model"].get("anonymous_header") if binning else None) or {}
            if needs_iv and anonymous:       # the guest decides on the IVs; manual filters apply here first
                mine = self.manual(chosen) if "manually" in p["filter_methods"] else chosen
                fed.remote([a for a, f in anonymous.items() if f in mine], "candidates", "selection", "guest", 0)
                kept = set(fed.get("left", "selection", "guest", 0)[0])
                left = [f for f in mine if any(anonymous.get(a) == f for a in kept)]
                return [f for f in features if f not in chosen or f in left], [{"filter": "guest's decision"}]
            left = self.manual(chosen)
            return [f for f in features if f not in chosen or f in left], []
        ivs = {}
        hosts: dict[str, list[str]] = {}
        if binning:
            model = binning[0]["model"]
            ivs = {f: r["iv"] for f, r in model["binning_result"].items() if "iv" in r}
            for host_results in (model.get("host_results") or {}).values():
                ivs.update({a: r["iv"] for a, r in host_results.items()})
        if needs_iv and binning and binning[0]["model"].get("host_results"):
            for i, names in enumerate(fed.get("candidates", "selection", "host", -1)):
                hosts[str(i)] = names
        own = self.manual(chosen) if "manually" in p["filter_methods"] else chosen
        candidates = own + [a for names in hosts.values() for a in names]
        results = []
        for method in p["filter_methods"]:
            if method == "manually":
                continue
            before = list(candidates)
            candidates = self.by_iv(method, candidates, ivs)
            results.append({"filter": method, "left": list(candidates), "dropped": [c for c in before
                                                                                   if c not in candidates]})
        for i, names in hosts.items():
            fed.remote([a for a in names if a in candidates], "left", "selection", "host", int(i))
        left = [f for f in own if f in candidates]
        return [f for f in features if f not in chosen or f in left], results

    def manual(self, chosen: list[str]) -> list[str]:
        m = self.params["manually_param"]
        out = list(chosen)
        drop = set(m["filter_out_names"] or []) | {chosen[i] for i in m["filter_out_indexes"] or []
                                                   if 0 <= i < len(chosen)}
        out = [f for f in out if f not in drop]
        if m["left_col_names"] or m["left_col_indexes"]:
            keep = set(m["left_col_names"] or []) | {chosen[i] for i in m["left_col_indexes"] or []
                                                     if 0 <= i < len(chosen)}
            out = [f for f in out if f in keep]
        return out

    def by_iv(self, method: str, candidates: list[str], ivs: dict) -> list[str]:
        p = self.params
        have = [c for c in candidates if c in ivs]
        if method == "iv_value_thres":
            threshold = p["iv_value_param"]["value_threshold"]
            host_thresholds = p["iv_value_param"]["host_thresholds"]
            def limit(c):
                return host_thresholds if (c.startswith("host_") and isinstance(host_thresholds, (int, float))) \
                    else threshold
            return [c for c in candidates if c not in ivs or ivs[c] >= limit(c)]
        if not have:
            return candidates
        values = np.array([ivs[c] for c in have])
        if method == "iv_percentile":
            pct = p["iv_percentile_param"]["percentile_threshold"]
            cut = float(np.percentile(values, (1.0 - pct) * 100.0)) if pct > 0 else float("inf")
            return [c for c in candidates if c not in ivs or ivs[c] >= cut]
        k = p["iv_top_k_param"]["k"]
        top = set(sorted(have, key=lambda c: -ivs[c])[:k])
        return [c for c in candidates if c not in ivs or c in top]
