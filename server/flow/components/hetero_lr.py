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

Around that core, as FATE does it:
* one-vs-rest: with more than two label values the guest tells hosts and arbiter the classes and one
  binary model is trained per class (that class against the rest), each under its own federation scope;
* validation during training (lr_callbacks.py): the hosts send the guest their plain X_h w_h of the
  train and validate rows, the guest evaluates, and tells hosts and arbiter whether to stop and which
  epoch's model to keep;
* warm start: `input.model` together with `train_data` continues from that model's weights and epoch;
* sample weights (SampleWeight, on the guest): the guest multiplies each row's encrypted [[4d]] by its
  weight before the gradients are formed, so the hosts' gradients are weighted too;
* cross-validation (`cv_param.need_cv`): the guest splits the ids into folds and tells the hosts; each
  fold is trained and evaluated (metrics `fold_<k>`), and the output is each row's held-out prediction.

Predict (after training, and in predict mode from `input.model`): each host sends the guest its
plain X_h w_h for the rows; the guest writes FATE's predict table (see base.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from server.flow.components import linear, lr_callbacks
from server.flow.components.base import Component, ComponentContext, ComponentError
from server.flow.components.data import Instances, one_input, read_instances
from server.flow.components.evaluation import multi_metrics
from server.flow.components.paillier import PublicKey, encode, keypair

MODULE = "HeteroLR"
WEIGHT_BITS = 10        # fixed-point bits of sample weights multiplied into the encrypted fore-gradient


@dataclass
class Fitted:
    """One party's trained models: one binary model, or one per class (one-vs-rest)."""
    classes: list[float] | None
    weights: list[np.ndarray]
    intercepts: list[float]
    iters: int = 0
    is_converged: bool = False
    best_iteration: int = -1
    loss_history: list[float] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)


class HeteroLR(Component):
    module = MODULE
    roles = ("guest", "host", "arbiter")
    defaults = {**linear.LOGISTIC_DEFAULTS, "metrics": ["auc", "ks"], "encrypted_mode_calculator_param": None,
                "sqn_param": None}

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        linear.check_logistic(MODULE, p, early_stops=["diff", "abs", "weight_diff"])
        self.callbacks = lr_callbacks.resolve(MODULE, p, params, homo=False)
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
        self.threshold = p["predict_param"]["threshold"]

    # ------------------------------------------------------------------------------------------
    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        models = ctx.input_model("model")
        if not linear.trains(ctx):
            if ctx.role == "arbiter":
                return
            if not models:
                raise ComponentError(f"{MODULE}: predict needs input.model (the trained HeteroLR model)")
            table = one_input(MODULE, ctx.input_tables("test_data") or ctx.input_tables("data"), "test_data")
            data = read_instances(MODULE, table)
            fitted = fitted_from_model(MODULE, models[0]["model"], data.features)
            self.threshold = linear.trained_threshold(models[0], self.threshold)
            self.write_predictions(ctx, [self.predict(ctx, data, fitted, "test", "predict")])
            return
        if len(ctx.roles.get("host", [])) > 1 and self.params["early_stop"] != "weight_diff":
            raise ComponentError(f"{MODULE}: with several hosts only early_stop weight_diff is supported "
                                 "(the loss needs cross-host terms)")
        warm = models[0]["model"] if models else None
        if self.params["cv_param"]["need_cv"]:
            if warm is not None:
                raise ComponentError(f"{MODULE}: cross-validation (cv_param.need_cv) does not take input.model")
            return self.cross_validate(ctx)
        if ctx.role == "arbiter":
            fitted = self.fit_arbiter(ctx, "", warm)
            ctx.summary({"loss_history": fitted.loss_history, "is_converged": fitted.is_converged,
                         "best_iteration": fitted.best_iteration, "iters": fitted.iters})
            ctx.save_model(linear.lr_model(iters=fitted.iters, is_converged=fitted.is_converged,
                                           loss_history=fitted.loss_history),
                           linear.lr_meta(self.params, MODULE, False))
            return
        data = read_instances(MODULE, one_input(MODULE, ctx.input_tables("train_data"), "train_data"))
        validate = [read_instances(MODULE, t) for t in ctx.input_tables("validate_data")]
        fitted = self.fit(ctx, data, validate, "", warm)
        # one output table: the train rows, then each validate set's (FATE's "type" column tells them apart)
        parts = [self.predict(ctx, data, fitted, "train", "train")]
        parts += [self.predict(ctx, v, fitted, "validate", f"validate_{i}") for i, v in enumerate(validate)]
        self.write_predictions(ctx, parts)
        self.save(ctx, data.features, fitted)

    # -- one fit: every binary model, on every role -----------------------------------------------
    def fit(self, ctx: ComponentContext, data: Instances, validate: list[Instances], scope: str,
            warm: dict | None) -> Fitted:
        fed = ctx.federation
        if ctx.role == "guest":
            data = scaled_weights(data)
            classes = linear.classes_of(MODULE, data)
            fed.remote(classes, "classes", f"{scope}fit", "host", -1)
            fed.remote(classes, "classes", f"{scope}fit", "arbiter", 0)
        else:
            classes = fed.get("classes", f"{scope}fit", "guest", 0)[0]
        starts = warm_start(MODULE, warm, data.features, classes, ctx.role == "guest")
        fitted = Fitted(classes, [], [])
        ys = linear.targets(data.y, classes) if ctx.role == "guest" else [None] * (len(classes or [None]))
        val_ys = [linear.targets(v.y, classes) if ctx.role == "guest" and v.y is not None else None
                  for v in validate]
        for k, y in enumerate(ys):
            sub = scope if classes is None else f"{scope}c{k}."
            prefix = scope_name(scope, classes, k)
            v_targets = [vy[k] if vy is not None else None for vy in val_ys]
            if ctx.role == "guest":
                w, b, info = self.train_guest(ctx, data, y, validate, v_targets, sub, prefix, starts[k])
            else:
                w, info = self.train_host(ctx, data, validate, sub, starts[k])
                b = 0.0
            fitted.weights.append(w)
            fitted.intercepts.append(b)
            fitted.iters, fitted.is_converged, fitted.best_iteration = info["iters"], info["converged"], info["best"]
            fitted.checkpoints += info["checkpoints"]
        return fitted

    def fit_arbiter(self, ctx: ComponentContext, scope: str, warm: dict | None) -> Fitted:
        classes = ctx.federation.get("classes", f"{scope}fit", "guest", 0)[0]
        start = int((warm or {}).get("iters", 0))
        fitted = Fitted(classes, [], [])
        for k in range(len(classes or [None])):
            sub = scope if classes is None else f"{scope}c{k}."
            losses, iters, converged = self.train_arbiter(ctx, sub, start)
            fitted.loss_history += losses
            fitted.iters, fitted.is_converged = iters, converged
        return fitted

    # -- cross-validation ---------------------------------------------------------------------------
    def cross_validate(self, ctx: ComponentContext) -> None:
        fed, cv = ctx.federation, self.params["cv_param"]
        n = cv["n_splits"]
        if ctx.role == "arbiter":
            for k in range(n):
                self.fit_arbiter(ctx, f"cv{k}.", None)
            return
        data = read_instances(MODULE, one_input(MODULE, ctx.input_tables("train_data"), "train_data"))
        if ctx.role == "guest":
            held_out = [[data.sids[i] for i in part] for part in linear.folds(data.sids, cv)]
            fed.remote(held_out, "folds", "cv", "host", -1)
        else:
            held_out = fed.get("folds", "cv", "guest", 0)[0]
        index = {s: i for i, s in enumerate(data.sids)}
        rows, per_fold = [], {"train": [], "validate": []}
        for k, test_sids in enumerate(held_out):
            test_idx = [index[s] for s in test_sids if s in index]
            test_set = set(test_idx)
            train_part = subset(data, [i for i in range(len(data)) if i not in test_set])
            test_part = subset(data, test_idx)
            fitted = self.fit(ctx, train_part, [test_part], f"cv{k}.", None)
            for data_type, part in (("train", train_part), ("validate", test_part)):
                predicted = self.predict(ctx, part, fitted, data_type, f"cv{k}.{data_type}")
                if predicted is None:
                    continue
                values = fold_metrics(ctx, f"fold_{k}", data_type, part, predicted, fitted.classes)
                per_fold[data_type].append(values)
                if data_type == "validate":
                    rows += predicted
            ctx.log(f"{MODULE}: fold {k} done")
        if ctx.role == "guest":
            ctx.write_table(rows, linear.PREDICT_SCHEMA)
            ctx.summary({data_type: {m: {"mean": float(np.mean([f[m] for f in folds])),
                                         "std": float(np.std([f[m] for f in folds]))}
                                     for m in (folds[0] if folds else {})}
                         for data_type, folds in per_fold.items()})

    # -- arbiter --------------------------------------------------------------------------------
    def train_arbiter(self, ctx: ComponentContext, scope: str, start: int) -> tuple[list[float], int, bool]:
        p, fed = self.params, ctx.federation
        hosts = len(ctx.roles.get("host", []))
        started = time.monotonic()
        pub, priv = keypair(p["encrypt_param"]["key_length"])
        fed.remote(pub, "paillier_pubkey", f"{scope}train", "guest", 0)
        fed.remote(pub, "paillier_pubkey", f"{scope}train", "host", -1)
        optimizer = linear.Optimizer(p)
        optimizer.iteration = start
        scale = 2.0 ** (2 * self.precision)
        losses, previous, is_converged, iteration = [], None, False, start - 1
        for iteration in range(start, p["max_iter"]):
            ctx.check_cancelled()
            n_batches = fed.get("batch_count", f"{scope}{iteration}", "guest", 0)[0]
            batch_losses, step_total = [], None
            for b in range(n_batches):
                tag = f"{scope}{iteration}.{b}"
                g_msg = fed.get("guest_gradient", tag, "guest", 0)[0]
                h_msgs = fed.get("host_gradient", tag, "host", -1)
                rows = g_msg["rows"]
                parts = [g_msg["gradient"]] + [h["gradient"] for h in h_msgs]
                weight_scale = 2.0 ** g_msg.get("weight_bits", 0)
                grads = [np.array(priv.decrypt(c), dtype=np.float64) / (4.0 * scale * weight_scale * rows)
                         for c in parts]
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
                linear.report_loss(ctx, iteration, loss, scope)
            step_norm = float(np.linalg.norm(step_total)) if step_total is not None else 0.0
            is_converged = linear.converged(p["early_stop"], p["tol"], loss, previous, step_norm)
            previous = loss
            optimizer.iteration += 1
            fed.remote(is_converged, "converged", f"{scope}{iteration}", "guest", 0)
            fed.remote(is_converged, "converged", f"{scope}{iteration}", "host", -1)
            stop = False
            if self.callbacks.validation_due(iteration):
                stop = fed.get("validation", f"{scope}{iteration}", "guest", 0)[0]["stop"]
            ctx.progress(int(100 * (iteration + 1) / p["max_iter"]))
            ctx.log(f"{MODULE}: {scope}iteration {iteration} loss {loss} "
                    f"({(time.monotonic() - started) / (iteration + 1 - start):.2f} s/iteration)")
            if is_converged or stop:
                break
        return losses, iteration + 1, is_converged

    # -- guest ----------------------------------------------------------------------------------
    def train_guest(self, ctx: ComponentContext, data: Instances, y: np.ndarray, validate: list[Instances],
                    val_targets: list, scope: str, prefix: str, start: tuple) -> tuple[np.ndarray, float, dict]:
        p, fed, P = self.params, ctx.federation, self.precision
        y_pm = 2.0 * y - 1.0
        fit_intercept = p["init_param"]["fit_intercept"]
        X = np.hstack([data.X, np.ones((len(data), 1))]) if fit_intercept else data.X
        rng = np.random.default_rng(p["init_param"]["random_seed"])
        w, first = self._initial(start, X.shape[1], rng, fit_intercept)
        pub: PublicKey = fed.get("paillier_pubkey", f"{scope}train", "arbiter", 0)[0]
        fed.remote(data.sids, "sids", f"{scope}train", "host", -1)
        validation = self._validation_sets(ctx, data, y, validate, val_targets, scope)
        stopper = lr_callbacks.EarlyStopper(self.callbacks.early_stopping_rounds, self.callbacks.use_first_metric_only)
        snapshots, checkpoints = {}, []
        single_host = len(ctx.roles.get("host", [])) == 1
        iters, converged, stop = first, False, False
        for iteration in range(first, p["max_iter"]):
            ctx.check_cancelled()
            plan = linear.batches(len(data), p, rng)
            fed.remote([b.tolist() for b in plan], "batches", f"{scope}{iteration}", "host", -1)
            fed.remote(len(plan), "batch_count", f"{scope}{iteration}", "arbiter", 0)
            for b, idx in enumerate(plan):
                tag = f"{scope}{iteration}.{b}"
                forwards = fed.get("host_forward", tag, "host", -1)
                enc_wx_h = forwards[0]["wx"]
                for f in forwards[1:]:
                    enc_wx_h = pub.add(enc_wx_h, f["wx"])
                wx_g = X[idx] @ w
                enc_4d = pub.add_plain(enc_wx_h, encode(wx_g - 2.0 * y_pm[idx], P))
                bits = 0
                if data.weights is not None:      # SampleWeight: each row's term times its weight (fixed point)
                    bits = WEIGHT_BITS
                    enc_4d = pub.scale(enc_4d, encode(data.weights[idx], bits))
                fed.remote({"d": enc_4d, "weight_bits": bits}, "fore_gradient", tag, "host", -1)
                gradient = pub.dot(enc_4d, [encode(col, P) for col in X[idx].T])
                gradient = pub.add_plain(gradient, encode(4 * len(idx) * linear.l2_gradient(
                    w, p["penalty"], p["alpha"], fit_intercept), 2 * P + bits))
                loss = None
                if single_host:   # 8 m loss = 8 m log2 - 4 sum y'wx_g + sum wx_g^2 + sum (2 wx_g - 4y') wx_h + sum wx_h^2
                    m = len(idx)
                    plain = 8 * m * math.log(2) - 4 * float(y_pm[idx] @ wx_g) + float(wx_g @ wx_g)
                    cross = pub.dot(enc_wx_h, [encode(2.0 * wx_g - 4.0 * y_pm[idx], P)])[0]
                    loss = pub.add_plain([pub.add([cross], [forwards[0]["wx_square_sum"]])[0]],
                                         encode([plain], 2 * P))[0]
                coef = w[:-1] if fit_intercept else w
                fed.remote({"gradient": gradient, "rows": len(idx), "loss": loss, "weight_bits": bits,
                            "penalty": linear.penalty_loss(coef, p["penalty"], p["alpha"])},
                           "guest_gradient", tag, "arbiter", 0)
                answer = fed.get("step", tag, "arbiter", 0)[0]
                w = linear.apply_step(w, np.array(answer["step"]), p["penalty"], p["alpha"], p["learning_rate"],
                                      iteration, fit_intercept)
            ctx.progress(int(100 * (iteration + 1) / p["max_iter"]))
            iters, converged = iteration + 1, fed.get("converged", f"{scope}{iteration}", "arbiter", 0)[0]
            if self.callbacks.validation_due(iteration):
                stop = self._validate_guest(ctx, iteration, w, fit_intercept, validation, stopper, scope, prefix)
                snapshots[iteration] = w.copy()
            if self.callbacks.checkpoint_due(iteration):
                checkpoints.append(checkpoint(iteration, w, fit_intercept, prefix))
            if converged or stop:
                break
        if self.callbacks.early_stopping and stopper.best_epoch in snapshots:
            w = snapshots[stopper.best_epoch]            # the best model seen, as FATE keeps it
        info = {"iters": iters, "converged": converged, "best": stopper.best_epoch if self.callbacks.early_stopping
                else -1, "checkpoints": checkpoints}
        if fit_intercept:
            return w[:-1], float(w[-1]), info
        return w, 0.0, info

    def _initial(self, start: tuple, size: int, rng, fit_intercept: bool) -> tuple[np.ndarray, int]:
        """Fresh weights, or (warm start) the previous model's, with the epoch to continue from."""
        w0 = linear.init_weights(self.params["init_param"], size, rng)
        if start is None:
            return w0, 0
        weights, intercept, iters = start
        return (np.append(weights, intercept) if fit_intercept else np.array(weights, dtype=np.float64)), iters

    def _validation_sets(self, ctx, data, y, validate, val_targets, scope) -> list[tuple]:
        """(data type, rows, labels) of what validation evaluates: the train data and each validate set."""
        if not self.callbacks.validating:
            return []
        sets = [("train", data, y)] + [("validate", v, t) for v, t in zip(validate, val_targets)]
        ctx.federation.remote([s[1].sids for s in sets], "validation_sids", f"{scope}train", "host", -1)
        return sets

    def _validate_guest(self, ctx, iteration, w, fit_intercept, sets, stopper, scope, prefix) -> bool:
        fed = ctx.federation
        contributions = fed.get("validation_wx", f"{scope}{iteration}", "host", -1)
        name = lr_callbacks.data_set_name(iteration, prefix)
        validate_values: dict = {}
        for i, (data_type, data, y) in enumerate(sets):
            coef, b = (w[:-1], w[-1]) if fit_intercept else (w, 0.0)
            z = data.X @ coef + b
            for host in contributions:
                z = z + np.array(host[i])
            if y is None:
                continue
            values = lr_callbacks.evaluate(ctx, self.callbacks.metrics, data_type, name, y, linear.sigmoid(z))
            if data_type == "validate" and not validate_values:
                validate_values = values
        stop = stopper.update(iteration, validate_values) if validate_values else False
        message = {"stop": stop, "best": stopper.best_epoch}
        fed.remote(message, "validation", f"{scope}{iteration}", "host", -1)
        fed.remote(message, "validation", f"{scope}{iteration}", "arbiter", 0)
        return stop

    # -- host -----------------------------------------------------------------------------------
    def train_host(self, ctx: ComponentContext, data: Instances, validate: list[Instances], scope: str,
                   start: tuple) -> tuple[np.ndarray, dict]:
        p, fed, P = self.params, ctx.federation, self.precision
        rng = np.random.default_rng(p["init_param"]["random_seed"])
        w, first = self._initial(start, data.X.shape[1], rng, False)
        pub: PublicKey = fed.get("paillier_pubkey", f"{scope}train", "arbiter", 0)[0]
        X = aligned(MODULE, data, fed.get("sids", f"{scope}train", "guest", 0)[0])
        validation = []
        if self.callbacks.validating:
            wanted = fed.get("validation_sids", f"{scope}train", "guest", 0)[0]
            pool = [data] + validate
            if len(wanted) != len(pool):
                raise ComponentError(f"{MODULE}: the guest validates {len(wanted) - 1} validate data set(s), this "
                                     f"party has {len(pool) - 1}")
            validation = [aligned(MODULE, rows, sids) for rows, sids in zip(pool, wanted)]
        snapshots, checkpoints, best = {}, [], -1
        iters, converged = first, False
        for iteration in range(first, p["max_iter"]):
            ctx.check_cancelled()
            plan = fed.get("batches", f"{scope}{iteration}", "guest", 0)[0]
            for b, idx in enumerate(plan):
                tag = f"{scope}{iteration}.{b}"
                wx = X[idx] @ w
                fed.remote({"wx": pub.encrypt(encode(wx, P)),
                            "wx_square_sum": pub.encrypt(encode([float(wx @ wx)], 2 * P))[0]},
                           "host_forward", tag, "guest", 0)
                fore = fed.get("fore_gradient", tag, "guest", 0)[0]
                gradient = pub.dot(fore["d"], [encode(col, P) for col in X[idx].T])
                gradient = pub.add_plain(gradient, encode(4 * len(idx) * linear.l2_gradient(
                    w, p["penalty"], p["alpha"], False), 2 * P + fore["weight_bits"]))
                fed.remote({"gradient": gradient, "penalty": linear.penalty_loss(w, p["penalty"], p["alpha"])},
                           "host_gradient", tag, "arbiter", 0)
                answer = fed.get("step", tag, "arbiter", 0)[0]
                w = linear.apply_step(w, np.array(answer["step"]), p["penalty"], p["alpha"], p["learning_rate"],
                                      iteration, False)
            ctx.progress(int(100 * (iteration + 1) / p["max_iter"]))
            iters, converged = iteration + 1, fed.get("converged", f"{scope}{iteration}", "arbiter", 0)[0]
            stop = False
            if self.callbacks.validation_due(iteration):
                fed.remote([(Xv @ w).tolist() for Xv in validation], "validation_wx", f"{scope}{iteration}",
                           "guest", 0)
                answer = fed.get("validation", f"{scope}{iteration}", "guest", 0)[0]
                stop, best = answer["stop"], answer["best"]
                snapshots[iteration] = w.copy()
            if self.callbacks.checkpoint_due(iteration):
                checkpoints.append(checkpoint(iteration, w, False, ""))
            if converged or stop:
                break
        if self.callbacks.early_stopping and best in snapshots:
            w = snapshots[best]
        return w, {"iters": iters, "converged": converged, "best": best if self.callbacks.early_stopping else -1,
                   "checkpoints": checkpoints}

    # -- predict and models ---------------------------------------------------------------------
    def predict(self, ctx: ComponentContext, data: Instances, fitted: Fitted, data_type: str,
                tag: str) -> list[list] | None:
        """The guest's prediction rows (hosts contribute their X_h w_h and return None)."""
        fed = ctx.federation
        if ctx.role == "host":
            X = aligned(MODULE, data, fed.get("predict_sids", tag, "guest", 0)[0])
            fed.remote([(X @ w).tolist() for w in fitted.weights], "host_predict", tag, "guest", 0)
            return None
        fed.remote(data.sids, "predict_sids", tag, "host", -1)
        z = np.stack([data.X @ w + b for w, b in zip(fitted.weights, fitted.intercepts)], axis=1)
        for wx_h in fed.get("host_predict", tag, "host", -1):
            z = z + np.array(wx_h).T
        scores = linear.sigmoid(z)
        if fitted.classes is None:
            rows, _ = linear.predict_rows(data.sids, data.labels, scores[:, 0], self.threshold, data_type)
            return rows
        return linear.ovr_predict_rows(data.sids, data.labels, scores, fitted.classes, data_type)

    @staticmethod
    def write_predictions(ctx: ComponentContext, parts: list[list[list] | None]) -> None:
        if ctx.role == "guest":
            ctx.write_table([row for part in parts for row in part], linear.PREDICT_SCHEMA)

    def save(self, ctx: ComponentContext, features: list[str], fitted: Fitted) -> None:
        fit_intercept = ctx.role == "guest" and self.params["init_param"]["fit_intercept"]
        model = model_of(features, fitted)
        meta = linear.lr_meta(self.params, MODULE, fit_intercept)
        meta["need_one_vs_rest"] = fitted.classes is not None
        ctx.save_model(model, meta)
        if ctx.role == "guest":
            summary = {"coef": model["weight"], "intercept": model["intercept"], "is_converged": fitted.is_converged,
                       "iters": fitted.iters, "one_vs_rest": fitted.classes is not None,
                       "best_iteration": fitted.best_iteration}
            if fitted.checkpoints:
                summary["checkpoints"] = [c["iteration"] for c in fitted.checkpoints]
            ctx.summary(summary)


def scope_name(scope: str, classes: list[float] | None, k: int) -> str:
    """The data set name prefix of validation metrics: the fold and/or the class, as FATE names them."""
    parts = []
    if scope.startswith("cv"):
        parts.append(f"fold_{scope[2:].split('.')[0]}")
    if classes is not None:
        parts.append(linear.class_text(classes[k]))
    return ".".join(parts)


def checkpoint(iteration: int, w: np.ndarray, fit_intercept: bool, prefix: str) -> dict:
    """ModelCheckpoint: the model after an epoch (kept in the saved model's "checkpoints")."""
    coef, b = (w[:-1], float(w[-1])) if fit_intercept else (w, 0.0)
    return {"iteration": iteration, "class": prefix, "weight": [float(v) for v in coef], "intercept": b}


def model_of(features: list[str], fitted: Fitted) -> dict:
    """FATE's LRModelParam: a binary model, or one-vs-rest with every class's model."""
    models = [linear.lr_model({f: float(v) for f, v in zip(features, w)}, b, features, iters=fitted.iters,
                              is_converged=fitted.is_converged)
              for w, b in zip(fitted.weights, fitted.intercepts)]
    model = dict(models[0])
    model["best_iteration"] = fitted.best_iteration
    if fitted.classes is not None:
        model["need_one_vs_rest"] = True
        model["one_vs_rest_result"] = {"completed_models": models,
                                       "one_vs_rest_classes": [linear.class_text(c) for c in fitted.classes]}
    if fitted.checkpoints:
        model["checkpoints"] = fitted.checkpoints
    return model


def fitted_from_model(module: str, model: dict, features: list[str]) -> Fitted:
    ovr = model.get("one_vs_rest_result") if model.get("need_one_vs_rest") else None
    if ovr:
        classes = [float(c) for c in ovr["one_vs_rest_classes"]]
        parts = ovr["completed_models"]
    else:
        classes, parts = None, [model]
    return Fitted(classes, [weights_from_model(module, m, features) for m in parts],
                  [float(m.get("intercept", 0.0)) for m in parts], iters=int(model.get("iters", 0)))


def warm_start(module: str, model: dict | None, features: list[str], classes: list[float] | None,
               with_intercept: bool) -> list[tuple | None]:
    """Per binary model: (weights, intercept, epochs done) from an input model, or None to start afresh."""
    n = len(classes or [None])
    if model is None:
        return [None] * n
    prior = fitted_from_model(module, model, features)
    if (prior.classes is None) != (classes is None) or len(prior.weights) != n:
        raise ComponentError(f"{module}: the input model (warm start) has {len(prior.weights)} binary model(s) "
                             f"but this data needs {n}")
    return [(w, b if with_intercept else 0.0, prior.iters) for w, b in zip(prior.weights, prior.intercepts)]


def scaled_weights(data: Instances) -> Instances:
    """Sample weights rescaled to mean 1 over the data trained on, as FATE's HeteroLR guest does before
    fitting (each fold's own in cross-validation): only their ratios weigh the gradient."""
    if data.weights is None or not len(data) or not data.weights.sum():
        return data
    return Instances(data.sids, data.X, data.y, data.labels, data.features, data.schema,
                     data.weights * (len(data) / data.weights.sum()))


def subset(data: Instances, idx: list[int]) -> Instances:
    pick = np.array(idx, dtype=int)
    return Instances([data.sids[i] for i in idx], data.X[pick] if len(idx) else data.X[:0],
                     data.y[pick] if data.y is not None else None,
                     [data.labels[i] for i in idx] if data.labels is not None else None, data.features, data.schema,
                     data.weights[pick] if data.weights is not None else None)


def fold_metrics(ctx: ComponentContext, name: str, data_type: str, part: Instances, rows: list[list],
                 classes: list[float] | None) -> dict:
    """One fold's metrics (FATE's cross-validation logs them as `fold_<k>` in "train" and "validate")."""
    if classes is None:
        values = lr_callbacks.evaluate(ctx, ["auc", "ks"], data_type, name, part.y,
                                       np.array([float(r[3]) for r in rows]))
    else:
        values = multi_metrics([r[1] for r in rows], [r[2] for r in rows], ["accuracy", "precision", "recall"])
        ctx.metric(data_type, name, list(values.items()), {"name": name, "metric_type": "EVALUATION_SUMMARY"})
    return values


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
