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
"""
from __future__ import annotations

import hashlib
import secrets

import gmpy2
import numpy as np

from server.flow.components import linear
from server.flow.components import params as P
from server.flow.components.base import Component, ComponentContext, ComponentError
from server.flow.components.data import Instances, one_input, read_instances
from server.flow.components.hetero_lr import weights_from_model
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
        self.threshold = p["predict_param"]["threshold"]
        self.iters, self.is_converged = 0, False

    # ------------------------------------------------------------------------------------------
    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        models = ctx.input_model("model")
        if models or ctx.job_parameters.get("job_type") == "predict":
            if ctx.input_tables("train_data"):
                raise ComponentError(f"{MODULE}: input.model with train_data (warm start) is not supported")
            if ctx.role == "arbiter":
                return
            if not models:
                raise ComponentError(f"{MODULE}: predict needs input.model (the trained HomoLR model)")
            data = read_instances(MODULE, one_input(MODULE, ctx.input_tables("test_data") or ctx.input_tables("data"),
                                                    "test_data"))
            model = models[0]["model"]
            self.threshold = linear.trained_threshold(models[0], self.threshold)
            self.predict(ctx, [(data, "test")], weights_from_model(MODULE, model, data.features), model["intercept"])
            return
        if ctx.role == "arbiter":
            return self.train_arbiter(ctx)
        data = read_instances(MODULE, one_input(MODULE, ctx.input_tables("train_data"), "train_data"))
        w, intercept = self.train_client(ctx, data)
        validate = [(read_instances(MODULE, t), "validate") for t in ctx.input_tables("validate_data")]
        self.predict(ctx, [(data, "train")] + validate, w, intercept)
        weight = {f: float(v) for f, v in zip(data.features, w)}
        ctx.save_model(linear.lr_model(weight, intercept, data.features, iters=self.iters,
                                       is_converged=self.is_converged),
                       linear.lr_meta(self.params, MODULE, self.params["init_param"]["fit_intercept"]))
        ctx.summary({"coef": weight, "intercept": intercept, "is_converged": self.is_converged, "iters": self.iters,
                     "one_vs_rest": False, "best_iteration": -1})

    def rounds(self) -> list[int]:
        """The epochs after which the models are aggregated."""
        every, last = self.params["aggregate_iters"], self.params["max_iter"] - 1
        return [e for e in range(self.params["max_iter"]) if (e + 1) % every == 0 or e == last]

    # -- arbiter --------------------------------------------------------------------------------
    def train_arbiter(self, ctx: ComponentContext) -> None:
        p, fed = self.params, ctx.federation
        headers = fed.get("header", "train", "guest", 0) + fed.get("header", "train", "host", -1)
        if any(h != headers[0] for h in headers):
            fed.remote(False, "header_ok", "train", "guest", 0)
            fed.remote(False, "header_ok", "train", "host", -1)
            raise ComponentError(f"{MODULE}: the parties' features differ ({headers}); homo LR needs the same "
                                 "features everywhere")
        fed.remote(True, "header_ok", "train", "guest", 0)
        fed.remote(True, "header_ok", "train", "host", -1)
        losses, previous, is_converged, epoch = [], None, False, 0
        for epoch in self.rounds():
            ctx.check_cancelled()
            tag = f"{epoch}"
            shares = fed.get("model_share", tag, "guest", 0) + fed.get("model_share", tag, "host", -1)
            total_rows = sum(s["rows"] for s in shares)
            summed = np.zeros(len(shares[0]["weights"]), dtype=np.uint64)
            for s in shares:
                summed += np.array(s["weights"], dtype=np.uint64)          # mod 2**64: the masks cancel
            w = summed.view(np.int64).astype(np.float64) / SCALE / total_rows
            loss = sum(s["loss"] * s["rows"] for s in shares) / total_rows
            losses.append(loss)
            linear.report_loss(ctx, epoch, loss)
            is_converged = linear.converged(p["early_stop"], p["tol"], loss, previous, 0.0)
            previous = loss
            for role, idx in (("guest", 0), ("host", -1)):
                fed.remote({"weights": w.tolist(), "converged": is_converged}, "aggregated", tag, role, idx)
            ctx.progress(int(100 * (epoch + 1) / p["max_iter"]))
            if is_converged:
                break
        ctx.summary({"loss_history": losses, "is_converged": is_converged, "iters": epoch + 1})
        ctx.save_model(linear.lr_model(iters=epoch + 1, is_converged=is_converged, loss_history=losses),
                       linear.lr_meta(self.params, MODULE, self.params["init_param"]["fit_intercept"]))

    # -- guest and hosts --------------------------------------------------------------------------
    def train_client(self, ctx: ComponentContext, data: Instances) -> tuple[np.ndarray, float]:
        p, fed = self.params, ctx.federation
        y = linear.binary_labels(MODULE, data)
        fed.remote(data.features, "header", "train", "arbiter", 0)
        if not fed.get("header_ok", "train", "arbiter", 0)[0]:
            raise ComponentError(f"{MODULE}: the parties' features differ; homo LR needs the same features everywhere")
        fit_intercept = p["init_param"]["fit_intercept"]
        X = np.hstack([data.X, np.ones((len(data), 1))]) if fit_intercept else data.X
        rng = np.random.default_rng(p["init_param"]["random_seed"])
        # every client starts from the same weights: the guest's initialisation is shared
        if ctx.role == "guest":
            w = linear.init_weights(p["init_param"], X.shape[1], rng)
            fed.remote(w.tolist(), "init_weights", "train", "host", -1)
        else:
            w = np.array(fed.get("init_weights", "train", "guest", 0)[0])
        masks = PairwiseMasks(ctx) if p["secure_aggregate"] else None
        optimizer = linear.Optimizer(p)
        aggregate_after = set(self.rounds())
        for epoch in range(p["max_iter"]):
            ctx.check_cancelled()
            for idx in linear.batches(len(data), p, rng):
                z = X[idx] @ w
                grad = X[idx].T @ (linear.sigmoid(z) - y[idx]) / len(idx)
                grad = grad + linear.l2_gradient(w, p["penalty"], p["alpha"], fit_intercept)
                w = linear.apply_step(w, optimizer.step(grad), p["penalty"], p["alpha"], p["learning_rate"], epoch,
                                      fit_intercept)
            optimizer.iteration += 1
            if epoch not in aggregate_after:
                continue
            coef = w[:-1] if fit_intercept else w
            loss = log_loss(y, linear.sigmoid(X @ w)) + linear.penalty_loss(coef, p["penalty"], p["alpha"])
            fixed = np.rint(w * len(data) * SCALE)
            if np.any(np.abs(fixed) >= 2.0 ** 62):       # the masked sum is exact only within 64 bits
                raise ComponentError(f"{MODULE}: weights x rows too large for 64-bit aggregation "
                                     f"(|w| up to {np.abs(w).max():.3g} over {len(data)} rows)")
            share = fixed.astype(np.int64).view(np.uint64)
            if masks is not None:
                share = share + masks.mask(epoch, len(w))
            fed.remote({"weights": share.tolist(), "rows": len(data), "loss": loss}, "model_share", f"{epoch}",
                       "arbiter", 0)
            answer = fed.get("aggregated", f"{epoch}", "arbiter", 0)[0]
            w = np.array(answer["weights"])
            ctx.progress(int(100 * (epoch + 1) / p["max_iter"]))
            self.iters, self.is_converged = epoch + 1, answer["converged"]
            if self.is_converged:
                break
        if fit_intercept:
            return w[:-1], float(w[-1])
        return w, 0.0

    def predict(self, ctx: ComponentContext, sets: list[tuple[Instances, str]], w: np.ndarray,
                intercept: float) -> None:
        """One output table: each (data, type) set's predictions in turn."""
        rows = []
        for data, data_type in sets:
            part, _ = linear.predict_rows(data.sids, data.labels, linear.sigmoid(data.X @ w + intercept),
                                          self.threshold, data_type)
            rows += part
        ctx.write_table(rows, linear.PREDICT_SCHEMA)


def log_loss(y: np.ndarray, prob: np.ndarray) -> float:
    prob = np.clip(prob, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))


class PairwiseMasks:
    """Masks that cancel over all clients (guest = client 0, host i = client i + 1)."""

    def __init__(self, ctx: ComponentContext):
        fed = ctx.federation
        clients = [("guest", 0)] + [("host", i) for i in range(len(ctx.roles.get("host", [])))]
        me = clients.index((ctx.role, ctx.party_index))
        own = rsa_keypair(KEY_BITS)
        for peer in clients[:me]:                   # lower clients pick the seed and send it to higher ones
            fed.remote(own.public, "mask_key", f"{me}", *peer)
        self.seeds: dict[int, bytes] = {}
        for j, peer in enumerate(clients):
            if j > me:
                theirs = fed.get("mask_key", f"{j}", *peer)[0]
                r = secrets.randbelow(theirs["n"] - 2) + 2
                fed.remote(int(gmpy2.powmod(r, theirs["e"], theirs["n"])), "mask_seed", f"{me}", *peer)
                self.seeds[j] = _seed(r, theirs["n"])
        for j, peer in enumerate(clients[:me]):
            self.seeds[j] = _seed(int(own.private_op(fed.get("mask_seed", f"{j}", *peer)[0])), own.n)
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
