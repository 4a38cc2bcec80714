"""HeteroFeatureBinning: quantile or bucket binning of each party's features, and the information value
(IV) of every feature, the hosts' computed on encrypted labels (FATE's protocol):

  guest: a Paillier key; [[y_i]] for every row (the labels, encrypted)           -> hosts
  host:  bins its own features; per feature and bin, sum of [[y_i]] over its rows (the encrypted event
         count) and the row count                                                  -> guest
  guest: decrypts the event counts and computes each host feature's WOE and IV under an anonymous name
         (host_<party>_<index>); a host never sees a label or an IV, the guest never a host value.

IV = sum over bins of (event_rate - nonevent_rate) * ln(event_rate / nonevent_rate), a bin with no
events (or non-events) counted as `adjustment_factor`. `transform_param.transform_type` "bin_num"
replaces each transformed feature by its bin index (0..bins-1); "woe" (guest only) by its bin's WOE.
Predict mode (`input.model`) bins with the saved split points. The guest's model holds its own
binning results and each host's (by anonymous name); a host's model holds its split points and the
anonymous names of its features.
"""
from __future__ import annotations

import math

import numpy as np

from server.flow.components import params as P
from server.flow.components.base import Component, ComponentContext, ComponentError
from server.flow.components.data import Instances, data_and_models, instance_schema
from server.flow.components.paillier import encode, keypair

MODULE = "HeteroFeatureBinning"
TRANSFORM_DEFAULTS = {"transform_cols": -1, "transform_names": None, "transform_type": "bin_num"}
ENCRYPT_DEFAULTS = {"method": "Paillier", "key_length": 1024}


class HeteroFeatureBinning(Component):
    module = MODULE
    roles = ("guest", "host")
    defaults = {"method": "quantile", "compress_thres": 10000, "head_size": 10000, "error": 1e-4, "bin_num": 10,
                "bin_indexes": -1, "bin_names": None, "adjustment_factor": 0.5, "transform_param": None,
                "local_only": False, "category_indexes": None, "category_names": None, "encrypt_param": None,
                "skip_static": False, "split_points_by_index": None, "split_points_by_col_name": None,
                "optimal_binning_param": None}

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        p["method"] = P.choice(MODULE, "method", p["method"], ["quantile", "bucket"])
        P.number(MODULE, "bin_num", p["bin_num"], minimum=2, integer=True)
        P.number(MODULE, "adjustment_factor", p["adjustment_factor"], minimum=0, exclusive=True)
        P.number(MODULE, "error", p["error"], minimum=0)
        P.boolean(MODULE, "local_only", p["local_only"])
        for name in ("category_indexes", "category_names", "split_points_by_index", "split_points_by_col_name",
                     "optimal_binning_param"):
            if p[name]:
                raise ComponentError(f"{MODULE}: {name} is not supported")
        check_columns(MODULE, "bin_indexes", p["bin_indexes"], "bin_names", p["bin_names"])
        t = p["transform_param"] = P.merge_nested(MODULE, "transform_param", p["transform_param"], TRANSFORM_DEFAULTS)
        t["transform_type"] = P.choice(MODULE, "transform_param.transform_type", t["transform_type"],
                                       ["bin_num", "woe", None])
        check_columns(MODULE, "transform_param.transform_cols", t["transform_cols"], "transform_param.transform_names",
                      t["transform_names"])
        enc = p["encrypt_param"] = P.merge_nested(MODULE, "encrypt_param", p["encrypt_param"], ENCRYPT_DEFAULTS)
        if str(enc["method"]).lower() != "paillier":
            raise ComponentError(f"{MODULE}: encrypt_param.method must be Paillier")
        P.number(MODULE, "encrypt_param.key_length", enc["key_length"], minimum=512, integer=True)

    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        data, models = data_and_models(MODULE, ctx)
        if models:
            model = models[0]["model"]
            splits = {f: np.array(r["split_points"]) for f, r in model["binning_result"].items()}
            self.write(ctx, data, splits, model["binning_result"], models[0]["meta"].get("transform_param")
                       or self.params["transform_param"])
            return
        p = self.params
        columns = pick_columns(MODULE, data.features, p["bin_indexes"], p["bin_names"])
        splits = {f: split_points(data.X[:, data.features.index(f)], p["method"], p["bin_num"]) for f in columns}
        bins = {f: bin_index(data.X[:, data.features.index(f)], s) for f, s in splits.items()}
        results = {f: {"split_points": s.tolist(), "bin_nums": len(s)} for f, s in splits.items()}
        model: dict = {"header": data.features, "binning_result": results}
        if ctx.role == "guest":
            y = labels01(data)
            for f in columns:
                results[f].update(woe_iv(counts(bins[f], len(splits[f]), y), p["adjustment_factor"]))
            if not p["local_only"]:
                model["host_results"] = self.host_ivs(ctx, data, y)
            ctx.summary({"iv": {f: results[f]["iv"] for f in columns},
                         **{f"{host}_iv": {f: r["iv"] for f, r in res.items()}
                            for host, res in model.get("host_results", {}).items()}})
        elif not p["local_only"]:
            model["anonymous_header"] = self.send_encrypted_counts(ctx, data, bins, splits)
        ctx.save_model(model, {"method": p["method"], "bin_num": p["bin_num"], "cols": columns,
                               "transform_param": p["transform_param"], "local_only": p["local_only"],
                               "adjustment_factor": p["adjustment_factor"]})
        self.write(ctx, data, splits, results, p["transform_param"])

    # -- IV of the hosts' features, on encrypted labels ----------------------------------------------
    def host_ivs(self, ctx: ComponentContext, data: Instances, y: np.ndarray) -> dict:
        fed = ctx.federation
        pub, priv = keypair(self.params["encrypt_param"]["key_length"])
        fed.remote({"sids": data.sids, "labels": pub.encrypt(encode(y, 0)), "key": pub}, "encrypted_labels",
                   "binning", "host", -1)
        out = {}
        for i, answer in enumerate(fed.get("encrypted_counts", "binning", "host", -1)):
            res = {}
            for name, per_bin in answer.items():
                events = np.array(priv.decrypt(per_bin["events"]), dtype=np.float64)
                rows = np.array(per_bin["rows"], dtype=np.float64)
                res[name] = woe_iv((events, rows - events), self.params["adjustment_factor"])
            out[f"host_{ctx.roles['host'][i]}"] = res
        return out

    def send_encrypted_counts(self, ctx: ComponentContext, data: Instances, bins: dict, splits: dict) -> dict:
        fed = ctx.federation
        got = fed.get("encrypted_labels", "binning", "guest", 0)[0]
        pub, enc = got["key"], got["labels"]
        index = {s: i for i, s in enumerate(data.sids)}
        missing = [s for s in got["sids"] if s not in index]
        if missing:
            raise ComponentError(f"{MODULE}: {len(missing)} guest ids are not in this party's data; put an "
                                 "Intersection before it")
        order = [index[s] for s in got["sids"]]
        anonymous, answer = {}, {}
        for f, b in bins.items():
            name = f"host_{ctx.party_id}_{data.features.index(f)}"
            anonymous[name] = f
            b = b[order]
            per_bin = [[c for c, k in zip(enc, b) if k == j] for j in range(len(splits[f]))]
            answer[name] = {"events": [pub.sum(cs) for cs in per_bin], "rows": [len(cs) for cs in per_bin]}
        fed.remote(answer, "encrypted_counts", "binning", "guest", 0)
        return anonymous

    # -- output ---------------------------------------------------------------------------------------
    def write(self, ctx: ComponentContext, data: Instances, splits: dict, results: dict, transform: dict) -> None:
        cols = set(pick_columns(MODULE, data.features, transform["transform_cols"], transform["transform_names"]))
        X = data.X.copy()
        kind = transform["transform_type"]
        if kind == "woe" and ctx.role != "guest":
            kind = None                                    # hosts have no labels: FATE leaves their values
        for j, f in enumerate(data.features):
            if kind is None or f not in cols or f not in splits:
                continue
            b = bin_index(X[:, j], np.array(splits[f]))
            X[:, j] = b if kind == "bin_num" else np.array(results[f]["woe_array"])[b]
        out = data.with_features(X)
        schema = instance_schema(data.schema.get("sid", "id"), data.features, data.label_name)
        ctx.write_table(out.rows(), schema)


def check_columns(module: str, idx_name: str, indexes, names_name: str, names) -> None:
    if indexes != -1 and not (isinstance(indexes, list) and all(isinstance(i, int) for i in indexes)):
        raise ComponentError(f"{module}: {idx_name} must be -1 (every column) or a list of column indexes")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ComponentError(f"{module}: {names_name} must be a list of column names")


def pick_columns(module: str, features: list[str], indexes, names) -> list[str]:
    """The columns chosen by index (-1: all) and by name, in feature order."""
    chosen = set(features) if indexes == -1 else set()
    for i in [] if indexes == -1 else indexes:
        if not 0 <= i < len(features):
            raise ComponentError(f"{module}: column index {i} is out of range (there are {len(features)} features)")
        chosen.add(features[i])
    for n in names or []:
        if n not in features:
            raise ComponentError(f"{module}: column {n!r} is not a feature")
        chosen.add(n)
    return [f for f in features if f in chosen]


def split_points(values: np.ndarray, method: str, bin_num: int) -> np.ndarray:
    """Upper bounds of the bins (the last is the maximum): quantiles, or equal widths for "bucket"."""
    if len(values) == 0:
        return np.array([0.0])
    if method == "bucket":
        lo, hi = float(values.min()), float(values.max())
        points = lo + (hi - lo) * np.arange(1, bin_num + 1) / bin_num
    else:
        points = np.quantile(values, np.arange(1, bin_num + 1) / bin_num, method="lower")
    points[-1] = values.max()
    return np.unique(points)


def bin_index(values: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """The first bin whose upper bound is >= the value (values above the last bound go to the last bin)."""
    return np.minimum(np.searchsorted(splits, values, side="left"), len(splits) - 1)


def labels01(data: Instances) -> np.ndarray:
    if data.y is None:
        raise ComponentError(f"{MODULE}: the guest's data has no label; binning's IV needs it")
    if not set(np.unique(data.y).tolist()) <= {0.0, 1.0}:
        raise ComponentError(f"{MODULE}: IV needs binary 0/1 labels")
    return data.y


def counts(bins: np.ndarray, n_bins: int, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    events = np.bincount(bins, weights=y, minlength=n_bins)
    rows = np.bincount(bins, minlength=n_bins).astype(np.float64)
    return events, rows - events


def woe_iv(event_counts: tuple[np.ndarray, np.ndarray], adjustment: float) -> dict:
    events, nonevents = event_counts
    total_e, total_n = max(events.sum(), 1.0), max(nonevents.sum(), 1.0)
    woe, iv_array = [], []
    for e, n in zip(events, nonevents):
        er = (e if e > 0 else adjustment) / total_e
        nr = (n if n > 0 else adjustment) / total_n
        w = math.log(er / nr)
        woe.append(w)
        iv_array.append((er - nr) * w)
    return {"woe_array": woe, "iv_array": iv_array, "iv": float(sum(iv_array)),
            "event_count_array": [int(v) for v in events], "non_event_count_array": [int(v) for v in nonevents]}
