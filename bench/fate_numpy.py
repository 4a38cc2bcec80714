"""FATE 1.11's HeteroLR training rules re-done in plain numpy on the guest and host tables joined by
id: what FATE's published LR jobs reach, without encryption, federation or taskhub. It is the
reference for the figures of `python -m bench.fate_suites`: where taskhub's figure sits below
scikit-learn's, this shows whether FATE's own algorithm at the published parameters does too.

Written from FATE 1.11's sources (read, not copied): the Taylor gradient (0.25 wx - 0.5 y') x / m
of hetero_lr_gradient_and_loss, optimizer.py's optimizers with the L2 term added to the gradient
(intercept not penalised) and the learning rate decayed per epoch, the Taylor loss with "diff"
convergence, initialize.py (random_uniform: U[0, 1) for every weight, intercept included; no seed
means a different start each run), scale_sample_weight (weights to mean 1), one-vs-rest (one
binary model per class on the masked labels), and validation_strategy.py with
performance_recorder.py (early stopping when ANY watched metric has not improved for
early_stopping_rounds validations; the model kept is the best of that metric, or without a stop
the best of the first metric).

    .venv/bin/python -m bench.fate_numpy [JOB ...] [--runs N] [--max-iter N]

Prints, per job: the figure the suite runner reports (train AUC or accuracy, or the cross-validated
mean held-out figure), over N runs for random starts.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np
from sklearn.metrics import roc_auc_score

from bench.fate_suites import DATA, read_csv

SUITE = os.path.join(DATA, "hetero_logistic_regression")
JOBS = ["hetero_lr_normal", "hetero_lr_validate", "hetero_lr_early_stop", "hetero_lr_cv", "hetero_lr_sparse_cv",
        "hetero_lr_sample_weights", "hetero_lr_one_vs_all", "hetero_lr_ovr_validate", "hetero_lr_ovr_cv",
        "hetero_lr_batch_random_strategy", "hetero_lr_sparse"]


def joined(conf: dict) -> tuple[np.ndarray, np.ndarray]:
    roles = conf["component_parameters"]["role"]
    names = {}
    for role in ("guest", "host"):
        for key, by_cpn in roles[role].items():
            if "reader_0" in by_cpn and "0" in key.split("|"):
                names[role] = by_cpn["reader_0"]["table"]["name"]
    (_, g), (_, h) = read_csv(names["guest"]), read_csv(names["host"])
    ids = sorted(i for i in g if i in h)   # FATE's KFold takes the ids in string order (indices.collect_index)
    y = np.array([float(g[i][0]) for i in ids])
    X = np.array([[float(v) for v in g[i][1:] + h[i]] for i in ids])
    return X, y


class Optimizer:
    def __init__(self, p: dict):
        self.kind, self.lr, self.decay, self.sqrt = p["optimizer"], p["learning_rate"], p["decay"], p["decay_sqrt"]
        self.iters, self.m, self.v, self.b1, self.b2 = 0, None, None, 1.0, 1.0

    def delta(self, g: np.ndarray) -> np.ndarray:
        lr = self.lr / (math.sqrt(1 + self.decay * self.iters) if self.sqrt else 1 + self.decay * self.iters)
        if self.m is None:
            self.m, self.v = np.zeros_like(g), np.zeros_like(g)
        if self.kind == "sgd":
            return lr * g
        if self.kind == "rmsprop":
            self.m = 0.99 * self.m + 0.01 * g * g
            return lr * g / np.sqrt(self.m + 1e-6)
        if self.kind == "adagrad":
            self.m = self.m + g * g
            return lr * g / (np.sqrt(self.m) + 1e-7)
        if self.kind == "adam":
            self.b1, self.b2 = self.b1 * 0.9, self.b2 * 0.999
            self.m, self.v = 0.9 * self.m + 0.1 * g, 0.999 * self.v + 0.001 * g * g
            return lr * (self.m / (1 - self.b1)) / (np.sqrt(self.v / (1 - self.b2)) + 1e-8)
        v = 0.9 * self.m - lr * g                       # nesterov_momentum_sgd
        out = 0.9 * self.m - 1.9 * v
        self.m = v
        return out


def ks_of(y: np.ndarray, s: np.ndarray) -> float:
    """FATE's KS: tpr - fpr at 100 thresholds, the scores at each 1% of the rows sorted by descending
    score, a row positive when its score is strictly above the threshold."""
    order = np.argsort(s)[::-1]
    ys, ss = y[order], s[order]
    thresholds = ss[[int(len(ss) * c / 100) for c in range(100)]]
    above = ss[None, :] > thresholds[:, None]
    tpr = (above & (ys == 1)).sum(axis=1) / (ys == 1).sum()
    fpr = (above & (ys != 1)).sum(axis=1) / (ys != 1).sum()
    return float(np.max(tpr - fpr))


def auc_ks(y: np.ndarray, s: np.ndarray) -> dict:
    return {"auc": float(roc_auc_score(y, s)), "ks": ks_of(y, s)}


def fit_binary(p: dict, X: np.ndarray, y: np.ndarray, wt: np.ndarray | None, Xv, yv, rng) -> np.ndarray:
    """One binary model (weights with the intercept last)."""
    Xb = np.hstack([X, np.ones((len(X), 1))])
    init = p["init_param"]
    w = {"zeros": np.zeros, "ones": np.ones}.get(init["init_method"], lambda n: rng.random(n))(Xb.shape[1])
    opt, ypm = Optimizer(p), 2 * y - 1
    cb = p.get("callback_param") or {}
    freqs = cb.get("validation_freqs", p.get("validation_freqs"))
    rounds = cb.get("early_stopping_rounds", p.get("early_stopping_rounds"))
    best, no_imp, best_w, kept = {}, {}, {}, None
    prev = None
    n, size = len(Xb), (len(Xb) if p["batch_size"] in (-1, None) or p["batch_size"] >= len(Xb) else p["batch_size"])
    for epoch in range(p["max_iter"]):
        opt.iters = epoch
        order = rng.permutation(n) if size < n else np.arange(n)
        if p.get("batch_strategy") == "random":
            order = np.sort(rng.choice(n, size, replace=False))
        losses = []
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            wx = Xb[idx] @ w
            d = 0.25 * wx - 0.5 * ypm[idx]
            if wt is not None:
                d = d * wt[idx]
            g = Xb[idx].T @ d / len(idx)
            g[:-1] += p["alpha"] * w[:-1]
            losses.append(math.log(2) - 0.5 * float(np.mean(ypm[idx] * wx)) + 0.125 * float(np.mean(wx * wx))
                          + 0.5 * p["alpha"] * float(w[:-1] @ w[:-1]))
            w = w - opt.delta(g)
            if p.get("batch_strategy") == "random":
                break
        loss = float(np.mean(losses))
        converged = prev is not None and abs(loss - prev) < p["tol"]
        prev = loss
        stop = False
        if freqs and Xv is not None and (epoch + 1) % freqs == 0 and rounds:
            values = auc_ks(yv, Xv @ w[:-1] + w[-1])
            if cb.get("use_first_metric_only", p.get("use_first_metric_only")):
                values = {"auc": values["auc"]}
            for i, (m, v) in enumerate(values.items()):
                if m not in best or v > best[m]:
                    best[m], no_imp[m], best_w[m] = v, 0, w.copy()
                    if i == 0:
                        kept = w.copy()
                else:
                    no_imp[m] += 1
            for m in values:
                if no_imp[m] >= rounds:
                    kept, stop = best_w[m], True
                    break
        if stop or converged:
            break
    return kept if kept is not None else w


def fit(p: dict, X, y, wt, Xv, yv, rng):
    """One model per class for more than two labels; (classes or None, [weights])."""
    if wt is not None:
        wt = wt * len(wt) / wt.sum()
    classes = sorted(set(y.tolist()))
    if len(classes) <= 2:
        return None, [fit_binary(p, X, y, wt, Xv, yv, rng)]
    return classes, [fit_binary(p, X, (y == c).astype(float), wt, Xv,
                                (yv == c).astype(float) if yv is not None else None, rng) for c in classes]


def figure(classes, ws, X, y) -> float:
    z = np.stack([X @ w[:-1] + w[-1] for w in ws], axis=1)
    if classes is None:
        return float(roc_auc_score(y, z[:, 0]))
    return float(np.mean(np.array(classes)[np.argmax(z, axis=1)] == y))


def run_job(name: str, rng, max_iter: int | None = None) -> float:
    with open(os.path.join(SUITE, f"{name}_conf.json")) as f:
        conf = json.load(f)
    common = conf["component_parameters"]["common"]
    p = {"decay": 1.0, "decay_sqrt": True, "tol": 1e-4, "batch_strategy": "full", **common["hetero_lr_0"]}
    p["init_param"] = {"init_method": "random_uniform", **(p.get("init_param") or {})}
    if max_iter:
        p["max_iter"] = max_iter
    X, y = joined(conf)
    wt = None
    cw = (common.get("sample_weight_0") or {}).get("class_weight")
    if cw:
        wt = np.array([float(cw[str(int(v))]) for v in y])
    cv = p.get("cv_param") or {}
    if cv.get("need_cv"):
        order = rng.permutation(len(y)) if cv.get("shuffle") else np.arange(len(y))
        scores = []
        for test in np.array_split(order, cv["n_splits"]):
            train = np.setdiff1d(np.arange(len(y)), test)
            classes, ws = fit(p, X[train], y[train], None if wt is None else wt[train], X[test], y[test], rng)
            scores.append(figure(classes, ws, X[test], y[test]))
        return float(np.mean(scores))
    classes, ws = fit(p, X, y, wt, X, y, rng)
    return figure(classes, ws, X, y)


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("jobs", nargs="*", default=JOBS)
    a.add_argument("--runs", type=int, default=5)
    a.add_argument("--max-iter", type=int, help="instead of the published max_iter (how far from converged it is)")
    args = a.parse_args()
    rng = np.random.default_rng()
    for name in args.jobs:
        values = [run_job(name, rng, args.max_iter) for _ in range(args.runs)]
        print(f"{name:<34} mean {np.mean(values):.4f}  min {min(values):.4f}  max {max(values):.4f}"
              f"  ({args.runs} runs)")


if __name__ == "__main__":
    main()
