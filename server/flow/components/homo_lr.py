"""HomoLR: logistic regression over horizontally split data (same features, different rows).

Guest and hosts (the clients) train on their own rows; every `aggregate_iters` epochs each sends
n_i * w_i to the arbiter, which returns the sample-weighted mean model, decides convergence from
the clients' mean loss and reports it (metric train/loss). Features must match across clients.

Secure aggregation (`secure_aggregate`, default true; FATE's name for it in its other homo
components): each pair of clients agrees a seed (RSA-KEM: one picks a random r, sends r^e under the
other's RSA key, both hash r), and each client adds, in 64-bit fixed point, the pairwise masks
PRG(seed_ij, round) for j > i and subtracts them for j < i; the masks cancel in the sum, so the
arbiter learns only the aggregate. `encrypt_param.method` must be null (FATE's Paillier homo LR
variant is not supported).

As in HeteroLR (and FATE): more than two label values (the union over the clients, which the arbiter
returns) train one binary model per class, one-vs-rest; validation during training evaluates each
client's own train and validate data (early stopping is refused for homo, as FATE refuses it); an
input model with train_data continues from it (warm start); cv_param.need_cv splits each client's
rows into folds.
"""
from __future__ import annotations

import hashlib
import secrets

import gmpy2
import numpy as np

from server.flow.components import linear, lr_callbacks
from server.flow.components import params as P
from server.flow.components.base import Component, ComponentContext, ComponentError
from server.flow.components.data import Instances, one_input, read_instances
from server.flow.components.hetero_lr import (Fitted, fitted_from_model, fold_metrics, model_of, scope_name, subset,
                                              warm_start)
from server.flow.components.rsa import rsa_keypair

MODULE = "HomoLR"
SCALE = 2.0 ** 24          # fixed point of the masked sums (mod 2**64)
KEY_BITS = 1024            # the pairwise seed-exchange keys


class HomoLR(Component):
    module = MODULE
    roles = ("guest", "host", "arbiter")
    defaults = {**linear.LOGISTIC_DEFAULTS, "encrypt_param": {"method": None}, "aggregate_iters": 1,
                "secure_aggregate": True}

    def __init__(self, params: dict):
        params = dict(params)
        if isinstance(params.get("encrypt_param"), dict) and "method" not in params["encrypt_param"]:
            params["encrypt_param"] = {**params["encrypt_param"], "method": None}
        params.setdefault("encrypt_param", {"method": None})
        super().__init__(params)
        p = self.params
        linear.check_logistic(MODULE, p, early_stops=["diff", "abs"])
        if p["encrypt_param"]["method"] is not None:
            raise ComponentError(f"{MODULE}: encrypt_param.method Paillier is not supported; use null "
                                 "(secure_aggregate protects each party's model)")
        P.number(MODULE, "aggregate_iters", p["aggregate_iters"], minimum=1, integer=True)
        P.boolean(MODULE, "secure_aggregate", p["secure_aggregate"])
        self.callbacks = lr_callbacks.resolve(MODULE, p, params, homo=True)
        self.threshold = p["predict_param"]["threshold"]
        self.iters, self.is_converged = 0, False

    # ------------------------------------------------------------------------------------------
    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        models = ctx.input_model("model")
        if not linear.trains(ctx):
            if ctx.role == "arbiter":
                return
            if not models:
                raise ComponentError(f"{MODULE}: predict needs input.model (the trained HomoLR model)")
            data = read_instances(MODULE, one_input(MODULE, ctx.input_tables("test_data") or ctx.input_tables("data"),
                                                    "test_data"))
            fitted = fitted_from_model(MODULE, models[0]["model"], data.features)
            self.threshold = linear.trained_threshold(models[0], self.threshold)
            self.predict(ctx, [(data, "test")], fitted)
            return
        warm = models[0]["model"] if models else None
        if self.params["cv_param"]["need_cv"]:
            if warm is not None:
                raise ComponentError(f"{MODULE}: cross-validation (cv_param.need_cv) does not take input.model")
            return self.cross_validate(ctx)
        if ctx.role == "arbiter":
            losses, iters, converged = self.fit_arbiter(ctx, "", warm)
            ctx.summary({"loss_history": losses, "is_converged": converged, "iters": iters})
            ctx.save_model(linear.lr_model(iters=iters, is_converged=converged, loss_history=losses),
                           linear.lr_meta(self.params, MODULE, self.params["init_param"]["fit_intercept"]))
            return
        data = read_instances(MODULE, one_input(MODULE, ctx.input_tables("train_data"), "train_data"))
        validate = [read_instances(MODULE, t) for t in ctx.input_tables("validate_data")]
        fitted = self.fit(ctx, data, validate, "", warm)
        self.predict(ctx, [(data, "train")] + [(v, "validate") for v in validate], fitted)
        model = model_of(data.features, fitted)
        meta = linear.lr_meta(self.params, MODULE, self.params["init_param"]["fit_intercept"])
        meta["need_one_vs_rest"] = fitted.classes is not None
        ctx.save_model(model, meta)
        ctx.summary({"coef": model["weight"], "intercept": model["intercept"], "is_converged": fitted.is_converged,
                     "iters": fitted.iters, "one_vs_rest": fitted.classes is not None, "best_iteration": -1})

    def rounds(self, first: int = 0) -> list[int]:
        """The epochs after which the models are aggregated."""
        every, last = self.params["aggregate_iters"], self.params["max_iter"] - 1
        return [e for e in range(first, self.params["max_iter"]) if (e + 1) % every == 0 or e == last]

    # -- one fit: every binary model --------------------------------------------------------------
    def fit(self, ctx: ComponentContext, data: Instances, validate: list[Instances], scope: str,
            warm: dict | None) -> Fitted:
        fed = ctx.federation
        own = linear.classes_of(MODULE, data)
        fed.remote(own, "classes", f"{scope}fit", "arbiter", 0)
        classes = fed.get("classes", f"{scope}fit", "arbiter", 0)[0]   # the union over the clients
        starts = warm_start(MODULE, warm, data.features, classes, self.params["init_param"]["fit_intercept"])
        fitted = Fitted(classes, [], [])
        val_ys = [linear.targets(v.y, classes) if v.y is not None else None for v in validate]
        for k, y in enumerate(linear.targets(data.y, classes)):
            sub = scope if classes is None else f"{scope}c{k}."
            prefix = scope_name(scope, classes, k)
            sets = [("train", data, y)] + [("validate", v, vy[k] if vy is not None else None)
                                            for v, vy in zip(validate, val_ys)]
            w, b = self.train_client(ctx, data, y, sub, prefix, sets, starts[k])
            fitted.weights.append(w)
            fitted.intercepts.append(b)
            fitted.iters, fitted.is_converged = self.iters, self.is_converged
        return fitted

    def fit_arbiter(self, ctx: ComponentContext, scope: str, warm: dict | None) -> tuple[list[float], int, bool]:
        fed = ctx.federation
        told = fed.get("classes", f"{scope}fit", "guest", 0) + fed.get("classes", f"{scope}fit", "host", -1)
        union = sorted({c for cs in told if cs is not None for c in cs} | ({0.0, 1.0} if None in told else set()))
        classes = None if set(union) <= {0.0, 1.0} else union
        fed.remote(classes, "classes", f"{scope}fit", "guest", 0)
        fed.remote(classes, "classes", f"{scope}fit", "host", -1)
        start = int((warm or {}).get("iters", 0))
        losses, iters, converged = [], start, False
        for k in range(len(classes or [None])):
            sub = scope if classes is None else f"{scope}c{k}."
            more, iters, converged = self.train_arbiter(ctx, sub, start)
            losses += more
        return losses, iters, converged

    # -- cross-validation: each client splits its own rows -------------------------------------------
    def cross_validate(self, ctx: ComponentContext) -> None:
        n = self.params["cv_param"]["n_splits"]
        if ctx.role == "arbiter":
            for k in range(n):
                self.fit_arbiter(ctx, f"cv{k}.", None)
            return
        data = read_instances(MODULE, one_input(MODULE, ctx.input_tables("train_data"), "train_data"))
        rows, per_fold = [], {"train": [], "validate": []}
        for k, held_out in enumerate(linear.folds(data.sids, self.params["cv_param"])):
            test_set = set(held_out)
            train_part = subset(data, [i for i in range(len(data)) if i not in test_set])
            test_part = subset(data, held_out)
            fitted = self.fit(ctx, train_part, [test_part], f"cv{k}.", None)
            for data_type, part in (("train", train_part), ("validate", test_part)):
                predicted = self.predict_rows(part, data_type, fitted)
                per_fold[data_type].append(fold_metrics(ctx, f"fold_{k}", data_type, part, predicted, fitted.classes))
                if data_type == "validate":
                    rows += predicted
        ctx.write_table(rows, linear.PREDICT_SCHEMA)
        ctx.summary({data_type: {m: {"mean": float(np.mean([f[m] for f in folds])),
                                     "std": float(np.std([f[m] for f in folds]))} for m in (folds[0] if folds else {})}
                     for data_type, folds in per_fold.items()})

    # -- arbiter --------------------------------------------------------------------------------
    def arbiter_headers(self, ctx: ComponentContext, scope: str) -> None:
        fed = ctx.federation
        headers = fed.get("header", f"{scope}train", "guest", 0) + fed.get("header", f"{scope}train", "host", -1)
        ok = all(h == headers[0] for h in headers)
        fed.remote(ok, "header_ok", f"{scope}train", "guest", 0)
        fed.remote(ok, "header_ok", f"{scope}train", "host", -1)
        if not ok:
            raise ComponentError(f"{MODULE}: the parties' features differ ({headers}); homo LR needs the same "
                                 "features everywhere")

    def train_arbiter(self, ctx: ComponentContext, scope: str, start: int) -> tuple[list[float], int, bool]:
        p, fed = self.params, ctx.federation
        self.arbiter_headers(ctx, scope)
        losses, previous, is_converged, epoch = [], None, False, start - 1
        for epoch in self.rounds(start):
            ctx.check_cancelled()
            tag = f"{scope}{epoch}"
            shares = fed.get("model_share", tag, "guest", 0) + fed.get("model_share", tag, "host", -1)
            total_rows = sum(s["rows"] for s in shares)
            summed = np.zeros(len(shares[0]["weights"]), dtype=np.uint64)
            for s in shares:
                summed += np.array(s["weights"], dtype=np.uint64)          # mod 2**64: the masks cancel
            w = summed.view(np.int64).astype(np.float64) / SCALE / total_rows
            loss = sum(s["loss"] * s["rows"] for s in shares) / total_rows
            losses.append(loss)
            linear.report_loss(ctx, epoch, loss, scope)
            is_converged = linear.converged(p["early_stop"], p["tol"], loss, previous, 0.0)
            previous = loss
            for role, idx in (("guest", 0), ("host", -1)):
                fed.remote({"weights": w.tolist(), "converged": is_converged}, "aggregated", tag, role, idx)
            ctx.progress(int(100 * (epoch + 1) / p["max_iter"]))
            if is_converged:
                break
        return losses, epoch + 1, is_converged

    # -- guest and hosts --------------------------------------------------------------------------
    def train_client(self, ctx: ComponentContext, data: Instances, y: np.ndarray, scope: str, prefix: str,
                     sets: list[tuple], start: tuple | None) -> tuple[np.ndarray, float]:
        p, fed = self.params, ctx.federation
        fed.remote(data.features, "header", f"{scope}train", "arbiter", 0)
        if not fed.get("header_ok", f"{scope}train", "arbiter", 0)[0]:
            raise ComponentError(f"{MODULE}: the parties' features differ; homo LR needs the same features everywhere")
        fit_intercept = p["init_param"]["fit_intercept"]
        X = np.hstack([data.X, np.ones((len(data), 1))]) if fit_intercept else data.X
        rng = np.random.default_rng(p["init_param"]["random_seed"])
        first = 0
        if start is not None:                        # warm start: every client continues from its input model
            weights, intercept, first = start
            w = np.append(weights, intercept) if fit_intercept else np.array(weights, dtype=np.float64)
        elif ctx.role == "guest":                    # every client starts from the same weights: the guest's
            w = linear.init_weights(p["init_param"], X.shape[1], rng)
            fed.remote(w.tolist(), "init_weights", f"{scope}train", "host", -1)
        else:
            w = np.array(fed.get("init_weights", f"{scope}train", "guest", 0)[0])
        masks = PairwiseMasks(ctx, scope) if p["secure_aggregate"] else None
        optimizer = linear.Optimizer(p)
        optimizer.iteration = first
        aggregate_after = set(self.rounds(first))
        self.iters, self.is_converged = first, False
        for epoch in range(first, p["max_iter"]):
            ctx.check_cancelled()
            for idx in linear.batches(len(data), p, rng):
                z = X[idx] @ w
                residual = linear.sigmoid(z) - y[idx]
                if data.weights is not None:           # SampleWeight
                    residual = residual * data.weights[idx]
                grad = X[idx].T @ residual / len(idx)
                grad = grad + linear.l2_gradient(w, p["penalty"], p["alpha"], fit_intercept)
                w = linear.apply_step(w, optimizer.step(grad), p["penalty"], p["alpha"], p["learning_rate"], epoch,
                                      fit_intercept)
            optimizer.iteration += 1
            converged = False
            if epoch in aggregate_after:
                w, converged = self.aggregate(ctx, X, y, w, epoch, scope, masks, fit_intercept)
            self.iters, self.is_converged = epoch + 1, converged
            ctx.progress(int(100 * (epoch + 1) / p["max_iter"]))
            if self.callbacks.validation_due(epoch):
                name = lr_callbacks.data_set_name(epoch, prefix)
                coef, b = (w[:-1], w[-1]) if fit_intercept else (w, 0.0)
                for data_type, rows, labels in sets:
                    if labels is not None:
                        lr_callbacks.evaluate(ctx, self.callbacks.metrics, data_type, name, labels,
                                              linear.sigmoid(rows.X @ coef + b))
            if converged:
                break
        if fit_intercept:
            return w[:-1], float(w[-1])
        return w, 0.0

    def aggregate(self, ctx, X, y, w, epoch, scope, masks, fit_intercept) -> tuple[np.ndarray, bool]:
        """This client's share of the weighted mean model, masked; the arbiter's answer."""
        p, fed = self.params, ctx.federation
        coef = w[:-1] if fit_intercept else w
        loss = log_loss(y, linear.sigmoid(X @ w)) + linear.penalty_loss(coef, p["penalty"], p["alpha"])
        fixed = np.rint(w * len(X) * SCALE)
        if np.any(np.abs(fixed) >= 2.0 ** 62):       # the masked sum is exact only within 64 bits
            raise ComponentError(f"{MODULE}: weights x rows too large for 64-bit aggregation "
                                 f"(|w| up to {np.abs(w).max():.3g} over {len(X)} rows)")
        share = fixed.astype(np.int64).view(np.uint64)
        if masks is not None:
            share = share + masks.mask(epoch, len(w))
        fed.remote({"weights": share.tolist(), "rows": len(X), "loss": loss}, "model_share", f"{scope}{epoch}",
                   "arbiter", 0)
        answer = fed.get("aggregated", f"{scope}{epoch}", "arbiter", 0)[0]
        return np.array(answer["weights"]), answer["converged"]

    def predict_rows(self, data: Instances, data_type: str, fitted: Fitted) -> list[list]:
        z = np.stack([data.X @ w + b for w, b in zip(fitted.weights, fitted.intercepts)], axis=1)
        scores = linear.sigmoid(z)
        if fitted.classes is None:
            rows, _ = linear.predict_rows(data.sids, data.labels, scores[:, 0], self.threshold, data_type)
            return rows
        return linear.ovr_predict_rows(data.sids, data.labels, scores, fitted.classes, data_type)

    def predict(self, ctx: ComponentContext, sets: list[tuple[Instances, str]], fitted: Fitted) -> None:
        """One output table: each (data, type) set's predictions in turn."""
        rows = []
        for data, data_type in sets:
            rows += self.predict_rows(data, data_type, fitted)
        ctx.write_table(rows, linear.PREDICT_SCHEMA)


def log_loss(y: np.ndarray, prob: np.ndarray) -> float:
    prob = np.clip(prob, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))


class PairwiseMasks:
    """Masks that cancel over all clients (guest = client 0, host i = client i + 1)."""

    def __init__(self, ctx: ComponentContext, scope: str = ""):
        fed = ctx.federation
        clients = [("guest", 0)] + [("host", i) for i in range(len(ctx.roles.get("host", [])))]
        me = clients.index((ctx.role, ctx.party_index))
        own = rsa_keypair(KEY_BITS)
        for peer in clients[:me]:                   # lower clients pick the seed and send it to higher ones
            fed.remote(own.public, "mask_key", f"{scope}{me}", *peer)
        self.seeds: dict[int, bytes] = {}
        for j, peer in enumerate(clients):
            if j > me:
                theirs = fed.get("mask_key", f"{scope}{j}", *peer)[0]
                r = secrets.randbelow(theirs["n"] - 2) + 2
                fed.remote(int(gmpy2.powmod(r, theirs["e"], theirs["n"])), "mask_seed", f"{scope}{me}", *peer)
                self.seeds[j] = _seed(r, theirs["n"])
        for j, peer in enumerate(clients[:me]):
            self.seeds[j] = _seed(int(own.private_op(fed.get("mask_seed", f"{scope}{j}", *peer)[0])), own.n)
        self.me = me

    def mask(self, round_: int, size: int) -> np.ndarray:
        total = np.zeros(size, dtype=np.uint64)
        for j, seed in self.seeds.items():
            stream = np.random.default_rng(int.from_bytes(hashlib.sha256(seed + round_.to_bytes(8, "big")).digest(),
                                                          "big"))
            m = stream.integers(0, 2 ** 64, size=size, dtype=np.uint64, endpoint=False)
            total = total + m if j > self.me else total - m
        return total


def _seed(r: int, n: int) -> bytes:
    return hashlib.sha256(r.to_bytes((n.bit_length() + 7) // 8, "big")).digest()
