"""Evaluation: metrics of prediction tables (base.py's predict layout), shaped as FATE reports them.

For each input table (named by the component that produced it, e.g. "hetero_lr_0") and each data
type in it ("train", "validate", "test": the metric namespace):
* single values: metric `<cpn>` with points [(metric, value)] and meta metric_type
  EVALUATION_SUMMARY (binary: auc, ks; regression: every metric; multi: accuracy, precision, recall);
* curves (binary): `<cpn>_roc` (fpr, tpr), `<cpn>_ks_fpr` / `<cpn>_ks_tpr` (cut, rate), `<cpn>_lift`,
  `<cpn>_gain`, `<cpn>_accuracy`, `<cpn>_precision`, `<cpn>_recall` (cut, value), with FATE's meta
  (metric_type "<METRIC>_EVALUATION", unit_name, ordinate_name, curve_name, pair_type, thresholds);
  `<cpn>_confusion_mat` and `<cpn>_f1_score` are meta-only tables (tp/tn/fp/fn, f1_scores by threshold).
  A cut is the share of rows scored at or above the threshold.
The summary is {<cpn>: {<data type>: {metric: value}}}.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from server.flow.components import params as P
from server.flow.components.base import Component, ComponentContext, ComponentError, Table

MODULE = "Evaluation"
BINARY = ["auc", "ks", "lift", "gain", "accuracy", "precision", "recall", "roc", "confusion_mat", "f1_score"]
REGRESSION = ["explained_variance", "mean_absolute_error", "mean_squared_error", "median_absolute_error",
              "r2_score", "root_mean_squared_error"]
MULTI = ["accuracy", "precision", "recall"]
NOT_SUPPORTED = ["psi", "quantile_pr"]
ROUND = 6
CUTS = 100          # curve points: thresholds at score quantiles 1/CUTS .. 1


class Evaluation(Component):
    module = MODULE
    roles = ("guest", "host", "local")
    defaults = {"eval_type": "binary", "pos_label": 1, "metrics": None, "run_clustering_arbiter_metric": False,
                "unfold_multi_result": False}

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        p["eval_type"] = P.choice(MODULE, "eval_type", p["eval_type"], ["binary", "regression", "multi"])
        allowed = {"binary": BINARY, "regression": REGRESSION, "multi": MULTI}[p["eval_type"]]
        metrics = p["metrics"] or allowed
        if not isinstance(metrics, list):
            raise ComponentError(f"{MODULE}: metrics must be a list of metric names")
        metrics = [m.lower() if isinstance(m, str) else m for m in metrics]
        for m in metrics:
            if m in NOT_SUPPORTED:
                raise ComponentError(f"{MODULE}: metric {m} is not supported")
            if m not in allowed:
                raise ComponentError(f"{MODULE}: metric {m!r} does not apply to eval_type {p['eval_type']}; "
                                     f"use {', '.join(allowed)}")
        p["metrics"] = metrics
        if P.boolean(MODULE, "unfold_multi_result", p["unfold_multi_result"]):
            raise ComponentError(f"{MODULE}: unfold_multi_result: true is not supported")

    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        tables = ctx.input_tables("data")
        if not tables:
            ctx.log(f"{MODULE}: no prediction data for {ctx.role} (nothing to evaluate)")
            return
        summary: dict = {}
        for table in tables:
            name = getattr(table, "source", None) or table.name
            for data_type, (labels, results, scores) in split_by_type(table).items():
                values = self.evaluate(ctx, name, data_type, labels, results, scores)
                summary.setdefault(name, {})[data_type] = values
        ctx.summary(summary)

    # ------------------------------------------------------------------------------------------
    def evaluate(self, ctx, name: str, ns: str, labels: list[str], results: list[str], scores: list[float]) -> dict:
        p = self.params
        if p["eval_type"] == "regression":
            y, pred = as_floats(labels, "label"), as_floats(results, "predict_result")
            values = {m: round(float(regression_metric(m, y, pred)), ROUND) for m in p["metrics"]}
        elif p["eval_type"] == "multi":
            values = multi_metrics(labels, results, p["metrics"])
        else:
            y = np.array([1.0 if _same_label(v, p["pos_label"]) else 0.0 for v in labels])
            values = self.binary(ctx, name, ns, y, np.array(scores, dtype=np.float64))
        if values:
            ctx.metric(ns, name, [(m, v) for m, v in values.items()], {"name": name, "metric_type": "EVALUATION_SUMMARY"})
        return values

    def binary(self, ctx, name: str, ns: str, y: np.ndarray, s: np.ndarray) -> dict:
        metrics = self.params["metrics"]
        if len(set(y.tolist())) < 2:
            raise ComponentError(f"{MODULE}: {name} ({ns}) has a single class; binary metrics need both")
        values = {}
        if "auc" in metrics:
            values["auc"] = round(auc(y, s), ROUND)
        thresholds, counts = confusion_by_threshold(y, s)
        tp, fp, _, _ = counts
        pos, neg = y.sum(), len(y) - y.sum()
        tpr, fpr = tp / pos, fp / neg
        if "ks" in metrics:
            values["ks"] = round(ks(y, s), ROUND)
        if "roc" in metrics:
            curve(ctx, ns, f"{name}_roc", np.append(fpr, 1.0), np.append(tpr, 1.0),
                  {"metric_type": "ROC_EVALUATION", "unit_name": "fpr", "ordinate_name": "tpr", "curve_name": name,
                   "thresholds": _r(np.append(thresholds, 1.0))})
        # the quantile curves (KS, lift, gain, accuracy, precision, recall, confusion matrix, F1)
        qt, qc = quantile_thresholds(s)
        q_tp, q_fp, q_tn, q_fn = at_thresholds(y, s, qt)
        q_prec = np.divide(q_tp, q_tp + q_fp, out=np.zeros_like(q_tp), where=(q_tp + q_fp) > 0)
        q_rec = q_tp / pos
        if "ks" in metrics:
            for rate, data in (("fpr", q_fp / neg), ("tpr", q_rec)):
                curve(ctx, ns, f"{name}_ks_{rate}", qc, data,
                      {"metric_type": "KS_EVALUATION", "unit_name": "", "curve_name": f"{name}_{rate}",
                       "pair_type": name, "thresholds": _r(qt)})
        for metric, data in (("lift", q_prec / (pos / len(y))), ("gain", q_rec),
                             ("accuracy", (q_tp + q_tn) / len(y))):
            if metric in metrics:
                curve(ctx, ns, f"{name}_{metric}", qc, data,
                      {"metric_type": f"{metric.upper()}_EVALUATION", "unit_name": "", "curve_name": name,
                       "thresholds": _r(qt)})
        for metric, data, ordinate in (("precision", q_prec, "Precision"), ("recall", q_rec, "Recall")):
            if metric in metrics:
                curve(ctx, ns, f"{name}_{metric}", qc, data,
                      {"metric_type": f"{metric.upper()}_BINARY_EVALUATION", "unit_name": "",
                       "ordinate_name": ordinate, "curve_name": name, "pair_type": name, "thresholds": _r(qt)})
        if "confusion_mat" in metrics:
            ctx.metric(ns, f"{name}_confusion_mat", [], {
                "name": f"{name}_confusion_mat", "metric_type": "CONFUSION_MAT",
                "tp": [int(v) for v in q_tp], "tn": [int(v) for v in q_tn], "fp": [int(v) for v in q_fp],
                "fn": [int(v) for v in q_fn], "thresholds": _r(qt)})
        if "f1_score" in metrics:
            f1 = np.divide(2 * q_prec * q_rec, q_prec + q_rec, out=np.zeros_like(q_prec), where=(q_prec + q_rec) > 0)
            ctx.metric(ns, f"{name}_f1_score", [], {"name": f"{name}_f1_score", "metric_type": "F1_SCORE",
                                                    "f1_scores": _r(f1), "thresholds": _r(qt)})
        return values


def single_values(y: np.ndarray, s: np.ndarray, metrics: list[str]) -> dict:
    """auc and ks of binary labels y (0/1) and scores s, unrounded (what validation during training
    compares, as FATE's performance recorder does; the logged metrics are rounded)."""
    values = {}
    if "auc" in metrics:
        values["auc"] = auc(y, s)
    if "ks" in metrics:
        values["ks"] = ks(y, s)
    return values


def ks(y: np.ndarray, s: np.ndarray) -> float:
    """FATE's KS value (classification_metric.KS): the largest tpr - fpr over 100 thresholds, the scores
    found at each 1% of the rows ranked by descending score, a row positive when its score is strictly
    above. It can be below the exact maximum over every score; early stopping on ks depends on it."""
    ranked = s[np.argsort(-s, kind="mergesort")]
    thresholds = ranked[[int(len(s) * (c / CUTS)) for c in range(CUTS)]]
    above = s[None, :] > thresholds[:, None]
    pos, neg = y.sum(), len(y) - y.sum()
    return float(np.max((above & (y[None, :] == 1)).sum(axis=1) / pos - (above & (y[None, :] != 1)).sum(axis=1) / neg))


# -- reading ---------------------------------------------------------------------------------------
def split_by_type(table: Table) -> dict[str, tuple[list[str], list[str], list[float]]]:
    header = list(table.schema.get("header") or [])
    need = ["label", "predict_result", "predict_score", "type"]
    absent = [c for c in need if c not in header]
    if absent:
        raise ComponentError(f"{MODULE}: input {table.namespace}.{table.name} is not a prediction table "
                             f"(no {', '.join(absent)} column); feed it a model component's output data")
    li, ri, si, ti = (1 + header.index(c) for c in need)
    out: dict = defaultdict(lambda: ([], [], []))
    for row in table.rows():
        labels, results, scores = out[row[ti]]
        labels.append(row[li])
        results.append(row[ri])
        try:
            scores.append(float(row[si]))
        except ValueError:
            scores.append(float("nan"))
    return dict(out)


def as_floats(values: list[str], column: str) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        raise ComponentError(f"{MODULE}: {column} column has non-numeric values") from None


def _same_label(value: str, pos_label) -> bool:
    try:
        return float(value) == float(pos_label)
    except (TypeError, ValueError):
        return str(value) == str(pos_label)


def _r(values) -> list[float]:
    return [round(float(v), ROUND) for v in values]


def curve(ctx: ComponentContext, ns: str, metric_name: str, xs, ys, meta: dict) -> None:
    points = sorted(zip(_r(xs), _r(ys)))
    ctx.metric(ns, metric_name, points, {"name": metric_name, **meta})


# -- binary ------------------------------------------------------------------------------------------
def auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counted half."""
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):                      # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    pos = y.sum()
    neg = len(y) - pos
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def confusion_by_threshold(y: np.ndarray, s: np.ndarray):
    """tp, fp, tn, fn when predicting positive for score >= t, for every distinct score t (descending)."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_run = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]
    tp = np.cumsum(y_sorted)[last_of_run]
    fp = (last_of_run + 1) - tp
    pos, neg = y.sum(), len(y) - y.sum()
    return s_sorted[last_of_run], (tp, fp, neg - fp, pos - tp)


def quantile_thresholds(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds at the score quantiles (descending) and the cut (share of rows at or above each)."""
    qs = np.unique(np.quantile(s, 1.0 - np.arange(1, CUTS + 1) / CUTS))[::-1]
    cuts = np.array([(s >= t).mean() for t in qs])
    return qs, cuts


def at_thresholds(y: np.ndarray, s: np.ndarray, thresholds: np.ndarray):
    pred = s[None, :] >= thresholds[:, None]
    tp = (pred & (y[None, :] == 1)).sum(axis=1).astype(float)
    fp = (pred & (y[None, :] == 0)).sum(axis=1).astype(float)
    pos, neg = y.sum(), len(y) - y.sum()
    return tp, fp, neg - fp, pos - tp


# -- regression and multi ------------------------------------------------------------------------------
def regression_metric(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    err = y - pred
    if metric == "mean_absolute_error":
        return np.mean(np.abs(err))
    if metric == "mean_squared_error":
        return np.mean(err ** 2)
    if metric == "root_mean_squared_error":
        return np.sqrt(np.mean(err ** 2))
    if metric == "median_absolute_error":
        return np.median(np.abs(err))
    total = np.sum((y - y.mean()) ** 2)
    if metric == "r2_score":
        return 1 - np.sum(err ** 2) / total if total else 0.0
    var = np.var(y)
    return 1 - np.var(err) / var if var else 0.0          # explained_variance


def multi_metrics(labels: list[str], results: list[str], metrics: list[str]) -> dict:
    y, pred = np.array([_norm(v) for v in labels]), np.array([_norm(v) for v in results])
    classes = sorted(set(y.tolist()) | set(pred.tolist()))
    out = {}
    if "accuracy" in metrics:
        out["accuracy"] = round(float((y == pred).mean()), ROUND)
    per_p, per_r = [], []
    for c in classes:
        predicted, actual = pred == c, y == c
        tp = float((predicted & actual).sum())
        per_p.append(tp / predicted.sum() if predicted.sum() else 0.0)
        per_r.append(tp / actual.sum() if actual.sum() else 0.0)
    if "precision" in metrics:
        out["precision"] = round(float(np.mean(per_p)), ROUND)
    if "recall" in metrics:
        out["recall"] = round(float(np.mean(per_r)), ROUND)
    return out


def _norm(v: str) -> str:
    try:
        f = float(v)
        return str(int(f)) if f.is_integer() else repr(f)
    except ValueError:
        return v
