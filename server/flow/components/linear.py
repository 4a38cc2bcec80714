"""What HeteroLR and HomoLR share: FATE's LogisticParam names and checks, weight initialisation,
optimizers, learning-rate decay, regularisation, batches, convergence and the predict output."""
from __future__ import annotations

import json
import math

import numpy as np

from server.flow.components import params as P
from server.flow.components.base import ComponentContext, ComponentError
from server.flow.components.data import Instances

INIT_DEFAULTS = {"init_method": "random_uniform", "init_const": 1, "fit_intercept": True, "random_seed": None}
ENCRYPT_DEFAULTS = {"method": "Paillier", "key_length": 2048}
PREDICT_DEFAULTS = {"threshold": 0.5}
CV_DEFAULTS = {"n_splits": 5, "mode": "hetero", "role": "guest", "shuffle": True, "random_seed": 1,
               "need_cv": False, "output_fold_history": True, "history_value_type": "score"}
STEPWISE_DEFAULTS = {"score_name": "AIC", "mode": "hetero", "role": "guest", "direction": "both", "max_step": 10,
                     "nvmin": 2, "nvmax": None, "need_stepwise": False}
SQN_DEFAULTS = {"update_interval_L": 3, "memory_M": 5, "sample_size": 5000, "random_seed": None}
ENCRYPTED_MODE_DEFAULTS = {"mode": "strict", "re_encrypted_rate": 1}
MIN_BATCH_SIZE = 10
MAX_CLASSES = 100

LOGISTIC_DEFAULTS = {
    "penalty": "L2", "tol": 1e-4, "alpha": 1.0, "optimizer": "rmsprop", "batch_size": -1, "shuffle": True,
    "batch_strategy": "full", "masked_rate": 5, "learning_rate": 0.01, "init_param": None, "max_iter": 100,
    "early_stop": "diff", "encrypt_param": None, "predict_param": None, "cv_param": None, "decay": 1,
    "decay_sqrt": True, "multi_class": "ovr", "validation_freqs": None, "early_stopping_rounds": None,
    "stepwise_param": None, "floating_point_precision": 23, "metrics": None, "use_first_metric_only": False,
    "callback_param": None,
}
OPTIMIZERS = ["sgd", "rmsprop", "adam", "adagrad", "nesterov_momentum_sgd"]


def check_logistic(module: str, p: dict, *, early_stops: list[str]) -> None:
    """FATE's LinearModelParam/LogisticParam checks, in place; nested objects merged over their defaults."""
    p["penalty"] = "NONE" if p["penalty"] is None else p["penalty"]
    p["penalty"] = P.choice(module, "penalty", p["penalty"].upper() if isinstance(p["penalty"], str) else p["penalty"],
                            ["L1", "L2", "NONE"], lower=False)
    P.number(module, "tol", p["tol"], minimum=0)
    P.number(module, "alpha", p["alpha"], minimum=0)
    if isinstance(p["optimizer"], str) and p["optimizer"].lower() == "sqn":
        raise ComponentError(f"{module}: optimizer sqn is not supported; use one of {', '.join(OPTIMIZERS)}")
    p["optimizer"] = P.choice(module, "optimizer", p["optimizer"], OPTIMIZERS)
    P.number(module, "batch_size", p["batch_size"], integer=True)
    if p["batch_size"] != -1 and p["batch_size"] < MIN_BATCH_SIZE:
        raise ComponentError(f"{module}: batch_size must be -1 (all data) or at least {MIN_BATCH_SIZE}, "
                             f"not {p['batch_size']}")
    P.boolean(module, "shuffle", p["shuffle"])
    p["batch_strategy"] = P.choice(module, "batch_strategy", p["batch_strategy"], ["full", "random"])
    P.number(module, "masked_rate", p["masked_rate"], minimum=0)
    P.number(module, "learning_rate", p["learning_rate"], minimum=0, exclusive=True)
    P.number(module, "max_iter", p["max_iter"], minimum=1, integer=True)
    p["early_stop"] = P.choice(module, "early_stop", p["early_stop"], early_stops)
    P.number(module, "decay", p["decay"], minimum=0)
    P.boolean(module, "decay_sqrt", p["decay_sqrt"])
    p["multi_class"] = P.choice(module, "multi_class", p["multi_class"], ["ovr"])
    if p["floating_point_precision"] is not None:
        P.number(module, "floating_point_precision", p["floating_point_precision"], minimum=1, integer=True)

    init = p["init_param"] = P.merge_nested(module, "init_param", p["init_param"], INIT_DEFAULTS)
    init["init_method"] = P.choice(module, "init_param.init_method", init["init_method"],
                                   ["zeros", "ones", "const", "random_uniform", "random_normal"])
    P.boolean(module, "init_param.fit_intercept", init["fit_intercept"])
    P.number(module, "init_param.init_const", init["init_const"])
    if init["random_seed"] is not None:
        P.number(module, "init_param.random_seed", init["random_seed"], minimum=0, integer=True)

    enc = p["encrypt_param"] = P.merge_nested(module, "encrypt_param", p["encrypt_param"], ENCRYPT_DEFAULTS)
    enc["method"] = P.choice(module, "encrypt_param.method", enc["method"].lower() if isinstance(enc["method"], str)
                             else enc["method"], ["paillier", None], lower=False)
    P.number(module, "encrypt_param.key_length", enc["key_length"], minimum=512, integer=True)

    pred = p["predict_param"] = P.merge_nested(module, "predict_param", p["predict_param"], PREDICT_DEFAULTS)
    P.number(module, "predict_param.threshold", pred["threshold"], minimum=0)

    cv = p["cv_param"] = P.merge_nested(module, "cv_param", p["cv_param"], CV_DEFAULTS)
    if P.boolean(module, "cv_param.need_cv", cv["need_cv"]):
        P.number(module, "cv_param.n_splits", cv["n_splits"], minimum=2, integer=True)
        P.boolean(module, "cv_param.shuffle", cv["shuffle"])
        if cv["random_seed"] is not None:
            P.number(module, "cv_param.random_seed", cv["random_seed"], minimum=0, integer=True)
    sw = p["stepwise_param"] = P.merge_nested(module, "stepwise_param", p["stepwise_param"], STEPWISE_DEFAULTS)
    if P.boolean(module, "stepwise_param.need_stepwise", sw["need_stepwise"]):
        raise ComponentError(f"{module}: stepwise (stepwise_param.need_stepwise: true) is not supported")


def trains(ctx: ComponentContext) -> bool:
    """Whether this run trains (train_data given) or predicts. The arbiter holds no data: the guest tells it."""
    if ctx.role == "guest":
        training = bool(ctx.input_tables("train_data"))
        ctx.federation.remote(training, "trains", "run", "arbiter", 0)
        return training
    if ctx.role == "arbiter":
        return ctx.federation.get("trains", "run", "guest", 0)[0]
    return bool(ctx.input_tables("train_data"))


# -- training pieces ------------------------------------------------------------------------------
def init_weights(init: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    method = init["init_method"]
    if method == "zeros":
        return np.zeros(size)
    if method == "ones":
        return np.ones(size)
    if method == "const":
        return np.full(size, float(init["init_const"]))
    if method == "random_normal":
        return rng.normal(size=size)
    return rng.uniform(size=size)


class Optimizer:
    """FATE's optimizers on a gradient vector: returns the step to subtract from the weights.
    The learning rate decays as lr / sqrt(1 + decay * t) (or lr / (1 + decay * t) without decay_sqrt)."""

    def __init__(self, p: dict):
        self.method, self.lr0 = p["optimizer"], float(p["learning_rate"])
        self.decay, self.decay_sqrt = float(p["decay"]), p["decay_sqrt"]
        self.iteration = 0
        self.m = self.v = None
        self.t = 0

    def learning_rate(self) -> float:
        scale = 1 + self.decay * self.iteration
        return self.lr0 / (math.sqrt(scale) if self.decay_sqrt else scale)

    def step(self, grad: np.ndarray) -> np.ndarray:
        lr = self.learning_rate()
        if self.m is None:
            self.m, self.v = np.zeros_like(grad), np.zeros_like(grad)
        self.t += 1
        if self.method == "sgd":
            return lr * grad
        if self.method == "rmsprop":
            self.v = 0.99 * self.v + 0.01 * grad * grad
            return lr * grad / np.sqrt(self.v + 1e-6)
        if self.method == "adagrad":
            self.v = self.v + grad * grad
            return lr * grad / (np.sqrt(self.v) + 1e-7)
        if self.method == "adam":
            self.m = 0.9 * self.m + 0.1 * grad
            self.v = 0.999 * self.v + 0.001 * grad * grad
            m_hat, v_hat = self.m / (1 - 0.9 ** self.t), self.v / (1 - 0.999 ** self.t)
            return lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        # nesterov_momentum_sgd
        previous = self.m.copy()
        self.m = 0.9 * self.m - lr * grad
        return -(-0.9 * previous + 1.9 * self.m)


def l2_gradient(w: np.ndarray, penalty: str, alpha: float, fit_intercept: bool) -> np.ndarray:
    """FATE adds the L2 term to the gradient before the optimizer (the intercept, w[-1] when fitted,
    is not penalised); other penalties add nothing here."""
    extra = np.zeros_like(w)
    if penalty == "L2":
        extra[:len(w) - 1 if fit_intercept else len(w)] = alpha * w[:len(w) - 1 if fit_intercept else len(w)]
    return extra


def apply_step(w: np.ndarray, step: np.ndarray, penalty: str, alpha: float, lr0: float, iteration: int,
               fit_intercept: bool) -> np.ndarray:
    """w - step; with L1, FATE's proximal shrinkage by alpha * lr / sqrt(iteration) afterwards."""
    w = w - step
    if penalty == "L1":
        coef = slice(0, len(w) - 1) if fit_intercept else slice(0, len(w))
        shrink = alpha * lr0 / math.sqrt(iteration + 1)
        w[coef] = np.sign(w[coef]) * np.maximum(0.0, np.abs(w[coef]) - shrink)
    return w


def penalty_loss(w: np.ndarray, penalty: str, alpha: float) -> float:
    if penalty == "L2":
        return 0.5 * alpha * float(w @ w)
    if penalty == "L1":
        return alpha * float(np.abs(w).sum())
    return 0.0


def batches(n: int, p: dict, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indexes of each batch of one iteration (FATE: full = ceil(n / batch_size) batches, random = one)."""
    size = n if p["batch_size"] == -1 or p["batch_size"] >= n else p["batch_size"]
    if p["batch_strategy"] == "random":
        return [np.sort(rng.choice(n, size=size, replace=False))]
    order = rng.permutation(n) if p["shuffle"] and size < n else np.arange(n)
    return [order[i:i + size] for i in range(0, n, size)]


def converged(early_stop: str, tol: float, loss: float | None, previous: float | None, step_norm: float) -> bool:
    if early_stop == "weight_diff":
        return step_norm < tol
    if loss is None:
        return False
    if early_stop == "abs":
        return loss < tol
    return previous is not None and abs(previous - loss) < tol


def classes_of(module: str, data: Instances) -> list[float] | None:
    """None for binary 0/1 labels; else the sorted classes, each trained one-vs-rest (FATE's multi_class ovr)."""
    if data.y is None:
        raise ComponentError(f"{module}: training data has no label; run DataTransform with with_label: true")
    labels = sorted(set(np.unique(data.y).tolist()))
    if set(labels) <= {0.0, 1.0}:
        return None
    if len(labels) > MAX_CLASSES:
        raise ComponentError(f"{module}: {len(labels)} classes; one-vs-rest is limited to {MAX_CLASSES}")
    return labels


def targets(y: np.ndarray, classes: list[float] | None) -> list[np.ndarray]:
    """The 0/1 target of each binary model: the labels, or one per class (that class against the rest)."""
    return [y] if classes is None else [(y == c).astype(np.float64) for c in classes]


def class_text(c: float) -> str:
    return str(int(c)) if float(c).is_integer() else repr(float(c))


def folds(sids: list[str], cv: dict) -> list[list[int]]:
    """Row indexes of each held-out fold (FATE's KFold over the ids, shuffled with random_seed if asked)."""
    order = np.argsort(np.array(sids, dtype=object), kind="stable")
    if cv["shuffle"]:
        order = order[np.random.default_rng(cv["random_seed"]).permutation(len(order))]
    n = cv["n_splits"]
    if n > len(sids):
        raise ComponentError(f"cv_param.n_splits={n} is more than the {len(sids)} rows")
    return [sorted(part.tolist()) for part in np.array_split(order, n)]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


PREDICT_SCHEMA = {"sid": "id", "header": ["label", "predict_result", "predict_score", "predict_detail", "type"]}


def predict_rows(sids: list[str], labels: list[str] | None, scores: np.ndarray, threshold: float,
                 data_type: str) -> tuple[list[list], dict]:
    """FATE's predict output: label, predict_result, predict_score, predict_detail, type."""
    rows = []
    for i, sid in enumerate(sids):
        s = float(scores[i])
        label = labels[i] if labels is not None else ""
        detail = json.dumps({"0": 1.0 - s, "1": s})
        rows.append([sid, label, 1 if s > threshold else 0, s, detail, data_type])
    return rows, dict(PREDICT_SCHEMA)


def ovr_predict_rows(sids: list[str], labels: list[str] | None, scores: np.ndarray, classes: list[float],
                     data_type: str) -> list[list]:
    """FATE's one-vs-rest output: the class of the highest score, that score, and every class's score."""
    names = [class_text(c) for c in classes]
    rows = []
    for i, sid in enumerate(sids):
        k = int(np.argmax(scores[i]))
        detail = json.dumps({n: float(v) for n, v in zip(names, scores[i])})
        rows.append([sid, labels[i] if labels is not None else "", names[k], float(scores[i][k]), detail, data_type])
    return rows


def lr_model(weights: dict[str, float] | None = None, intercept: float = 0.0, header: list[str] | None = None, *,
             iters: int = 0, is_converged: bool = False, loss_history: list[float] | None = None) -> dict:
    """A saved LR model, with FATE's LRModelParam field names."""
    return {"iters": iters, "loss_history": list(loss_history or []), "is_converged": is_converged,
            "weight": dict(weights or {}), "intercept": intercept, "header": list(header or []),
            "need_one_vs_rest": False, "best_iteration": -1}


def lr_meta(p: dict, module: str, fit_intercept: bool) -> dict:
    """Its meta, with FATE's LRModelMeta field names (the threshold is what predict mode uses)."""
    return {"penalty": p["penalty"], "tol": p["tol"], "alpha": p["alpha"], "optimizer": p["optimizer"],
            "party_weight": 0.0, "batch_size": p["batch_size"], "learning_rate": p["learning_rate"],
            "max_iter": p["max_iter"], "early_stop": p["early_stop"], "re_encrypt_batches": 0,
            "fit_intercept": fit_intercept, "need_one_vs_rest": False,
            "predict_param": {"threshold": p["predict_param"]["threshold"]}, "reveal_strategy": "", "module": module}


def trained_threshold(saved: dict, default: float) -> float:
    """Predict mode uses the trained model's threshold, as FATE does."""
    return (saved.get("meta") or {}).get("predict_param", {}).get("threshold", default)


def report_loss(ctx: ComponentContext, iteration: int, loss: float, scope: str = "") -> None:
    """Metric train/loss (per class or fold: loss.<scope>)."""
    name = f"loss.{scope.rstrip('.')}" if scope else "loss"
    ctx.metric("train", name, [(iteration, loss)], {"metric_type": "LOSS", "unit_name": "iters"})
