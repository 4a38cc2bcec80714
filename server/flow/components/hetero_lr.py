"""HeteroLR: logistic regression over vertically split data (FATE's hetero LR protocol).

Guest holds the labels and some features, each host other features of the same ids, the arbiter
the Paillier private key. Per batch:
  host:    [[wx_h]] = Enc(X_h w_h)                          -> guest (and, for the loss, [[sum wx_h^2]])
  guest:   [[4d]] = [[wx_h]] + (X_g w_g - 2y')  (y' = ±1; d = 0.25 wx - 0.5 y', the Taylor gradient
           of the log loss)                                  -> hosts
  both:    [[g]] = X^T [[4d]] (encrypted, never seen in plain by guest or host)   -> arbiter
  arbiter: decrypts, divides by 4 * batch rows, runs the optimizer over all parties' gradients (each
           party added its L2 term alpha * w to its encrypted gradient, as FATE does) and returns each
           party its step (L1 is a proximal shrink after the step); decrypts the Taylor loss
           log2 - 0.5 mean(y' wx) + 0.125 mean(wx^2) (+ penalties) and decides convergence.
Guest and host only ever see ciphertexts of each other's values; the arbiter sees gradients and the
loss, as in FATE. With more than one host the loss needs cross terms nobody can compute, so (as in
FATE) only early_stop weight_diff is allowed and no loss is reported.

Predict (after training, and in predict mode from `input.model`): each host sends the guest its
plain X_h w_h for the rows; the guest writes FATE's predict table (see base.py).
"""
from __future__ import annotations

import math
import time

import numpy as np

from server.flow.components import linear
from server.flow.components.base import Component, ComponentContext, ComponentError
from server.flow.components.data import Instances, one_input, read_instances
from server.flow.components.paillier import PublicKey, encode, keypair

MODULE = "HeteroLR"


class HeteroLR(Component):
    module = MODULE
    roles = ("guest", "host", "arbiter")
    defaults = {**linear.LOGISTIC_DEFAULTS, "metrics": ["auc", "ks"], "encrypted_mode_calculator_param": None,
                "sqn_param": None}

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        linear.check_logistic(MODULE, p, early_stops=["diff", "abs", "weight_diff"])
        p["encrypted_mode_calculator_param"] = linear.P.merge_nested(
            MODULE, "encrypted_mode_calculator_param", p["encrypted_mode_calculator_param"],
            linear.ENCRYPTED_MODE_DEFAULTS)
        mode = p["encrypted_mode_calculator_param"]
        mode["mode"] = linear.P.choice(MODULE, "encrypted_mode_calculator_param.mode", mode["mode"],
                                       ["strict", "fast", "balance", "confusion_opt", "confusion_opt_balance"])
        # every mode gets "strict" here: each ciphertext has its own fresh randomness
        p["sqn_param"] = linear.P.merge_nested(MODULE, "sqn_param", p["sqn_param"], linear.SQN_DEFAULTS)
        if p["encrypt_param"]["method"] != "paillier":
            raise ComponentError(f"{MODULE}: encrypt_param.method must be Paillier (hetero LR exchanges encrypted "
                                 "values)")
        self.precision = p["floating_point_precision"] or 23
        self.iters, self.is_converged = 0, False
        self.threshold = p["predict_param"]["threshold"]

    # ------------------------------------------------------------------------------------------
    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        models = ctx.input_model("model")
        predicting = bool(models) or ctx.job_parameters.get("job_type") == "predict"
        if predicting:
            if ctx.input_tables("train_data"):
                raise ComponentError(f"{MODULE}: input.model with train_data (warm start) is not supported")
            if ctx.role == "arbiter":
                return
            if not models:
                raise ComponentError(f"{MODULE}: predict needs input.model (the trained HeteroLR model)")
            table = one_input(MODULE, ctx.input_tables("test_data") or ctx.input_tables("data"), "test_data")
            model = models[0]["model"]
            data = read_instances(MODULE, table)
            weights = weights_from_model(MODULE, model, data.features)
            self.threshold = linear.trained_threshold(models[0], self.threshold)
            self.write_predictions(ctx, [self.predict(ctx, data, weights, model.get("intercept", 0.0), "test")])
            return
        if len(ctx.roles.get("host", [])) > 1 and self.params["early_stop"] != "weight_diff":
            raise ComponentError(f"{MODULE}: with several hosts only early_stop weight_diff is supported "
                                 "(the loss needs cross-host terms)")
        if ctx.role == "arbiter":
            return self.train_arbiter(ctx)
        data = read_instances(MODULE, one_input(MODULE, ctx.input_tables("train_data"), "train_data"))
        validate = [read_instances(MODULE, t) for t in ctx.input_tables("validate_data")]
        if ctx.role == "guest":
            w, intercept = self.train_guest(ctx, data)
        else:
            w, intercept = self.train_host(ctx, data), 0.0
        # one output table: the train rows, then each validate set's (FATE's "type" column tells them apart)
        parts = [self.predict(ctx, data, w, intercept, "train", tag="train")]
        parts += [self.predict(ctx, v, w, intercept, "validate", tag=f"validate_{i}") for i, v in enumerate(validate)]
        self.write_predictions(ctx, parts)
        self.save(ctx, data.features, w, intercept)

    # -- arbiter --------------------------------------------------------------------------------
    def train_arbiter(self, ctx: ComponentContext) -> None:
        p, fed = self.params, ctx.federation
        hosts = len(ctx.roles.get("host", []))
        started = time.monotonic()
        pub, priv = keypair(p["encrypt_param"]["key_length"])
        fed.remote(pub, "paillier_pubkey", "train", "guest", 0)
        fed.remote(pub, "paillier_pubkey", "train", "host", -1)
        optimizer = linear.Optimizer(p)
        scale = 2.0 ** (2 * self.precision)
        losses, previous, is_converged, iteration = [], None, False, 0
        for iteration in range(p["max_iter"]):
            ctx.check_cancelled()
            n_batches = fed.get("batch_count", f"{iteration}", "guest", 0)[0]
            batch_losses, step_total = [], None
            for b in range(n_batches):
                tag = f"{iteration}.{b}"
                g_msg = fed.get("guest_gradient", tag, "guest", 0)[0]
                h_msgs = fed.get("host_gradient", tag, "host", -1)
                rows = g_msg["rows"]
                parts = [g_msg["gradient"]] + [h["gradient"] for h in h_msgs]
                grads = [np.array(priv.decrypt(c), dtype=np.float64) / (4.0 * scale * rows) for c in parts]
                step = optimizer.step(np.concatenate(grads))
                offset = 0
                for who, g in zip([("guest", 0)] + [("host", h) for h in range(hosts)], grads):
                    fed.remote({"step": step[offset:offset + len(g)].tolist()}, "step", tag, *who)
                    offset += len(g)
                step_total = step if step_total is None else step_total + step
                if g_msg["loss"] is not None:
                    data_loss = priv.decrypt([g_msg["loss"]])[0] / (8.0 * scale * rows)
                    batch_losses.append(data_loss + g_msg["penalty"] + sum(h["penalty"] for h in h_msgs))
            loss = float(np.mean(batch_losses)) if batch_losses else None
            if loss is not None:
                losses.append(loss)
                linear.report_loss(ctx, iteration, loss)
            step_norm = float(np.linalg.norm(step_total)) if step_total is not None else 0.0
            is_converged = linear.converged(p["early_stop"], p["tol"], loss, previous, step_norm)
            previous = loss
            optimizer.iteration += 1
            fed.remote(is_converged, "converged", f"{iteration}", "guest", 0)
            fed.remote(is_converged, "converged", f"{iteration}", "host", -1)
            ctx.progress(int(100 * (iteration + 1) / p["max_iter"]))
            ctx.log(f"{MODULE}: iteration {iteration} loss {loss} "
                    f"({(time.monotonic() - started) / (iteration + 1):.2f} s/iteration)")
            if is_converged:
                break
        iters = iteration + 1
        ctx.summary({"loss_history": losses, "is_converged": is_converged, "best_iteration": -1, "iters": iters,
                     "seconds_per_iteration": (time.monotonic() - started) / iters})
        ctx.save_model(linear.lr_model(iters=iters, is_converged=is_converged, loss_history=losses),
                       linear.lr_meta(self.params, MODULE, False))

    # -- guest ----------------------------------------------------------------------------------
    def train_guest(self, ctx: ComponentContext, data: Instances) -> tuple[np.ndarray, float]:
        p, fed, P = self.params, ctx.federation, self.precision
        y = linear.binary_labels(MODULE, data)
        y_pm = 2.0 * y - 1.0
        fit_intercept = p["init_param"]["fit_intercept"]
        X = np.hstack([data.X, np.ones((len(data), 1))]) if fit_intercept else data.X
        rng = np.random.default_rng(p["init_param"]["random_seed"])
        w = linear.init_weights(p["init_param"], X.shape[1], rng)
        pub: PublicKey = fed.get("paillier_pubkey", "train", "arbiter", 0)[0]
        fed.remote(data.sids, "sids", "train", "host", -1)
        single_host = len(ctx.roles.get("host", [])) == 1
        for iteration in range(p["max_iter"]):
            ctx.check_cancelled()
            plan = linear.batches(len(data), p, rng)
            fed.remote([b.tolist() for b in plan], "batches", f"{iteration}", "host", -1)
            fed.remote(len(plan), "batch_count", f"{iteration}", "arbiter", 0)
            for b, idx in enumerate(plan):
                tag = f"{iteration}.{b}"
                forwards = fed.get("host_forward", tag, "host", -1)
                enc_wx_h = forwards[0]["wx"]
                for f in forwards[1:]:
                    enc_wx_h = pub.add(enc_wx_h, f["wx"])
                wx_g = X[idx] @ w
                enc_4d = pub.add_plain(enc_wx_h, encode(wx_g - 2.0 * y_pm[idx], P))
                fed.remote(enc_4d, "fore_gradient", tag, "host", -1)
                gradient = pub.dot(enc_4d, [encode(col, P) for col in X[idx].T])
                gradient = pub.add_plain(gradient, encode(4 * len(idx) * linear.l2_gradient(
                    w, p["penalty"], p["alpha"], fit_intercept), 2 * P))
                loss = None
                if single_host:   # 8 m loss = 8 m log2 - 4 sum y'wx_g + sum wx_g^2 + sum (2 wx_g - 4y') wx_h + sum wx_h^2
                    m = len(idx)
                    plain = 8 * m * math.log(2) - 4 * float(y_pm[idx] @ wx_g) + float(wx_g @ wx_g)
                    cross = pub.dot(enc_wx_h, [encode(2.0 * wx_g - 4.0 * y_pm[idx], P)])[0]
                    loss = pub.add_plain([pub.add([cross], [forwards[0]["wx_square_sum"]])[0]],
                                         encode([plain], 2 * P))[0]
                coef = w[:-1] if fit_intercept else w
                fed.remote({"gradient": gradient, "rows": len(idx), "loss": loss,
                            "penalty": linear.penalty_loss(coef, p["penalty"], p["alpha"])},
                           "guest_gradient", tag, "arbiter", 0)
                answer = fed.get("step", tag, "arbiter", 0)[0]
                w = linear.apply_step(w, np.array(answer["step"]), p["penalty"], p["alpha"], p["learning_rate"],
                                      iteration, fit_intercept)
            ctx.progress(int(100 * (iteration + 1) / p["max_iter"]))
            self.iters, self.is_converged = iteration + 1, fed.get("converged", f"{iteration}", "arbiter", 0)[0]
            if self.is_converged:
                break
        if fit_intercept:
            return w[:-1], float(w[-1])
        return w, 0.0

    # -- host -----------------------------------------------------------------------------------
    def train_host(self, ctx: ComponentContext, data: Instances) -> np.ndarray:
        p, fed, P = self.params, ctx.federation, self.precision
        rng = np.random.default_rng(p["init_param"]["random_seed"])
        w = linear.init_weights(p["init_param"], data.X.shape[1], rng)
        pub: PublicKey = fed.get("paillier_pubkey", "train", "arbiter", 0)[0]
        X = aligned(MODULE, data, fed.get("sids", "train", "guest", 0)[0])
        for iteration in range(p["max_iter"]):
            ctx.check_cancelled()
            plan = fed.get("batches", f"{iteration}", "guest", 0)[0]
            for b, idx in enumerate(plan):
                tag = f"{iteration}.{b}"
                wx = X[idx] @ w
                fed.remote({"wx": pub.encrypt(encode(wx, P)),
                            "wx_square_sum": pub.encrypt(encode([float(wx @ wx)], 2 * P))[0]},
                           "host_forward", tag, "guest", 0)
                enc_4d = fed.get("fore_gradient", tag, "guest", 0)[0]
                gradient = pub.dot(enc_4d, [encode(col, P) for col in X[idx].T])
                gradient = pub.add_plain(gradient, encode(4 * len(idx) * linear.l2_gradient(
                    w, p["penalty"], p["alpha"], False), 2 * P))
                fed.remote({"gradient": gradient, "penalty": linear.penalty_loss(w, p["penalty"], p["alpha"])},
                           "host_gradient", tag, "arbiter", 0)
                answer = fed.get("step", tag, "arbiter", 0)[0]
                w = linear.apply_step(w, np.array(answer["step"]), p["penalty"], p["alpha"], p["learning_rate"],
                                      iteration, False)
            ctx.progress(int(100 * (iteration + 1) / p["max_iter"]))
            self.iters, self.is_converged = iteration + 1, fed.get("converged", f"{iteration}", "arbiter", 0)[0]
            if self.is_converged:
                break
        return w

    # -- predict and models ---------------------------------------------------------------------
    def predict(self, ctx: ComponentContext, data: Instances, w: np.ndarray, intercept: float, data_type: str,
                tag: str = "predict") -> list[list] | None:
        """The guest's prediction rows (hosts contribute their X_h w_h and return None)."""
        fed = ctx.federation
        if ctx.role == "host":
            X = aligned(MODULE, data, fed.get("predict_sids", tag, "guest", 0)[0])
            fed.remote((X @ w).tolist(), "host_predict", tag, "guest", 0)
            return None
        fed.remote(data.sids, "predict_sids", tag, "host", -1)
        z = data.X @ w + intercept
        for wx_h in fed.get("host_predict", tag, "host", -1):
            z = z + np.array(wx_h)
        rows, _ = linear.predict_rows(data.sids, data.labels, linear.sigmoid(z), self.threshold, data_type)
        return rows

    @staticmethod
    def write_predictions(ctx: ComponentContext, parts: list[list[list] | None]) -> None:
        if ctx.role == "guest":
            ctx.write_table([row for part in parts for row in part], linear.PREDICT_SCHEMA)

    def save(self, ctx: ComponentContext, features: list[str], w: np.ndarray, intercept: float) -> None:
        weight = {f: float(v) for f, v in zip(features, w)}
        fit_intercept = ctx.role == "guest" and self.params["init_param"]["fit_intercept"]
        ctx.save_model(linear.lr_model(weight, intercept, features, iters=self.iters, is_converged=self.is_converged),
                       linear.lr_meta(self.params, MODULE, fit_intercept))
        if ctx.role == "guest":
            ctx.summary({"coef": weight, "intercept": intercept, "is_converged": self.is_converged,
                         "iters": self.iters, "one_vs_rest": False, "best_iteration": -1})


def aligned(module: str, data: Instances, sids: list[str]) -> np.ndarray:
    """This party's feature rows in the guest's id order."""
    index = {s: i for i, s in enumerate(data.sids)}
    missing = [s for s in sids if s not in index]
    if missing:
        raise ComponentError(f"{module}: {len(missing)} guest ids (e.g. {missing[0]}) are not in this party's data; "
                             "put an Intersection before it")
    return data.X[[index[s] for s in sids]] if sids else np.zeros((0, data.X.shape[1]))


def weights_from_model(module: str, model: dict, features: list[str]) -> np.ndarray:
    header = model.get("header") or []
    absent = [f for f in header if f not in features]
    if absent:
        raise ComponentError(f"{module}: input lacks feature(s) {', '.join(absent)} of the model")
    weights = np.zeros(len(features))
    for f in header:
        weights[features.index(f)] = model["weight"][f]
    return weights
