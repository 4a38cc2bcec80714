"""Validation during training, early stopping and checkpoints of HeteroLR and HomoLR, as FATE's
callback_param defines them.

FATE's rules: the old top-level names (`validation_freqs`, `early_stopping_rounds`, `metrics`,
`use_first_metric_only`) turn on the PerformanceEvaluate callback with those values, and may not be
combined with `callback_param`. Validation runs after epoch e when (e + 1) % validation_freqs == 0 (an
int) or e is in the list; it evaluates the train data and every validate data set, and logs metric
`iteration_<e>` (prefixed `<class>.` for one-vs-rest and `fold_<k>.` in cross-validation) in
namespaces "train" and "validate". Early stopping watches the validate data's single values (auc and
ks by default, unrounded; KS as FATE computes it): training stops as soon as ANY watched metric (only
the first, with use_first_metric_only) has not improved for early_stopping_rounds validations, and the
model kept is that metric's best epoch; when nothing stops it, the model kept is the first metric's
best epoch, not the last (FATE's validation_strategy.py with performance_recorder.py).
ModelCheckpoint keeps the model every save_freq epochs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.flow.components import params as P
from server.flow.components.base import ComponentContext, ComponentError
from server.flow.components.evaluation import ROUND, single_values

CALLBACKS = ["EarlyStopping", "ModelCheckpoint", "PerformanceEvaluate"]
DEPRECATED = ["validation_freqs", "early_stopping_rounds", "metrics", "use_first_metric_only"]
DEFAULTS = {"callbacks": None, "validation_freqs": None, "early_stopping_rounds": None, "metrics": None,
            "use_first_metric_only": False, "save_freq": 1}
LOWER_IS_BETTER = {"mean_absolute_error", "mean_squared_error", "median_absolute_error", "root_mean_squared_error"}


@dataclass
class Callbacks:
    callbacks: list[str]
    validation_freqs: int | list[int] | None
    early_stopping_rounds: int | None
    metrics: list[str]
    use_first_metric_only: bool
    save_freq: int

    @property
    def validating(self) -> bool:
        return bool(self.validation_freqs) and ("EarlyStopping" in self.callbacks
                                                or "PerformanceEvaluate" in self.callbacks)

    def validation_due(self, epoch: int) -> bool:
        if not self.validating:
            return False
        if isinstance(self.validation_freqs, int):
            return (epoch + 1) % self.validation_freqs == 0
        return epoch in self.validation_freqs

    @property
    def early_stopping(self) -> bool:
        return self.validating and self.early_stopping_rounds is not None

    def checkpoint_due(self, epoch: int) -> bool:
        return "ModelCheckpoint" in self.callbacks and (epoch + 1) % self.save_freq == 0


def resolve(module: str, params: dict, given: dict, *, homo: bool) -> Callbacks:
    """The callbacks of merged `params` (`given`: the parameters as the user wrote them)."""
    cb = P.merge_nested(module, "callback_param", params.get("callback_param"), DEFAULTS)
    old = [k for k in DEPRECATED if k in given]
    if old:
        if given.get("callback_param") is not None:
            raise ComponentError(f"{module}: {old[0]} and callback_param should not be set together; "
                                 f"move {old[0]} into callback_param")
        cb["callbacks"] = ["PerformanceEvaluate"]
        for k in old:
            cb[k] = params[k]
    callbacks = cb["callbacks"] or []
    if not isinstance(callbacks, list) or any(c not in CALLBACKS for c in callbacks):
        raise ComponentError(f"{module}: callback_param.callbacks={callbacks!r}; each must be one of "
                             f"{', '.join(CALLBACKS)}")
    freqs = cb["validation_freqs"]
    if freqs is not None:
        if isinstance(freqs, bool) or not (isinstance(freqs, int) or isinstance(freqs, list)):
            raise ComponentError(f"{module}: validation_freqs must be a positive integer or a list of epochs, "
                                 f"not {freqs!r}")
        if isinstance(freqs, int) and freqs <= 0:
            raise ComponentError(f"{module}: validation_freqs must be > 0, not {freqs}")
        if isinstance(freqs, list) and not all(isinstance(e, int) and not isinstance(e, bool) for e in freqs):
            raise ComponentError(f"{module}: validation_freqs as a list holds epoch numbers, not {freqs!r}")
    rounds = cb["early_stopping_rounds"]
    if rounds is not None:
        P.number(module, "early_stopping_rounds", rounds, minimum=1, integer=True)
        if freqs is None:
            raise ComponentError(f"{module}: early_stopping_rounds needs validation_freqs (validation must run "
                                 "to see whether a metric improves)")
    metrics = cb["metrics"] or []
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise ComponentError(f"{module}: metrics must be a list of metric names, not {metrics!r}")
    P.boolean(module, "use_first_metric_only", cb["use_first_metric_only"])
    P.number(module, "callback_param.save_freq", cb["save_freq"], minimum=1, integer=True)
    out = Callbacks(list(callbacks), freqs, rounds, [m.lower() for m in metrics], cb["use_first_metric_only"],
                    cb["save_freq"])
    if homo and rounds is not None and ("EarlyStopping" in callbacks or "PerformanceEvaluate" in callbacks):
        raise ComponentError(f"{module}: early stopping (early_stopping_rounds) is not supported for homo "
                             "algorithms, as in FATE")
    return out


@dataclass
class EarlyStopper:
    """FATE's performance recorder: per metric, the best value, its epoch and the rounds without improvement."""
    rounds: int | None
    first_only: bool
    best: dict = field(default_factory=dict)           # metric -> (value, epoch)
    no_improvement: dict = field(default_factory=dict)
    best_epoch: int = -1

    def update(self, epoch: int, values: dict) -> bool:
        """Record one validation's validate-data values; True when training should stop."""
        names = list(values)[:1] if self.first_only else list(values)
        for i, name in enumerate(names):
            v = values[name]
            old = self.best.get(name)
            better = old is None or (v < old[0] if name in LOWER_IS_BETTER else v > old[0])
            if better:
                self.best[name] = (v, epoch)
                self.no_improvement[name] = 0
                if i == 0:
                    self.best_epoch = epoch
            else:
                self.no_improvement[name] = self.no_improvement.get(name, 0) + 1
        if self.rounds is None:
            return False
        for name, count in self.no_improvement.items():
            if count >= self.rounds:
                self.best_epoch = self.best[name][1]
                return True
        return False


def data_set_name(epoch: int, prefix: str = "") -> str:
    return f"{prefix}iteration_{epoch}" if not prefix else f"{prefix}.iteration_{epoch}"


def evaluate(ctx: ComponentContext, component_metrics: list[str], data_type: str, name: str,
             labels: np.ndarray, scores: np.ndarray) -> dict:
    """Binary single-value metrics of one data set, logged as FATE's Evaluation logs them."""
    metrics = [m for m in component_metrics if m in ("auc", "ks")] or ["auc", "ks"]
    if len(set(labels.tolist())) < 2:
        return {}
    values = single_values(labels, scores, metrics)
    ctx.metric(data_type, name, [(m, round(v, ROUND)) for m, v in values.items()],
               {"name": name, "metric_type": "EVALUATION_SUMMARY"})
    return values
