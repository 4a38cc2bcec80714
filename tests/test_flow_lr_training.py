"""HeteroLR and HomoLR as FATE's published LR suites use them (tests/data/fate/*_logistic_regression):
validation during training and early stopping, one-vs-rest on the vehicle data, cross-validation,
warm start, several hosts. Run in the standalone context (one thread per party) with small keys and
few iterations; the suites themselves run against a real server in test_fate_suites.py."""
from __future__ import annotations

import json
import os

import pytest

from server.flow.components.base import ComponentError
from server.flow.components.hetero_lr import HeteroLR
from server.flow.components.homo_lr import HomoLR
from server.flow.standalone import MemoryTable, run_job

DATA = os.path.join(os.path.dirname(__file__), "data", "fate")
TABLES = {("experiment", name): MemoryTable.from_csv(os.path.join(DATA, f"{name}.csv"), "experiment", name)
          for name in ("breast_hetero_guest", "breast_hetero_host", "vehicle_scale_hetero_guest",
                       "vehicle_scale_hetero_host", "breast_homo_guest", "breast_homo_host",
                       "vehicle_scale_homo_guest", "vehicle_scale_homo_host")}


def published(suite: str, job: str, **overrides) -> tuple[dict, dict]:
    """A job of FATE's published suite, its components' parameters updated (small keys for speed)."""
    with open(os.path.join(DATA, suite, f"{job}_dsl.json")) as f:
        dsl = json.load(f)
    with open(os.path.join(DATA, suite, f"{job}_conf.json")) as f:
        conf = json.load(f)
    common = conf["component_parameters"]["common"]
    for cpn, params in overrides.items():
        common.setdefault(cpn, {}).update(params)
        if cpn.startswith("hetero_lr"):
            common[cpn]["encrypt_param"] = {"key_length": 512}
    return dsl, conf


def test_early_stopping_keeps_the_best_model_and_logs_validation_metrics():
    dsl, conf = published("hetero_logistic_regression", "hetero_lr_early_stop",
                          hetero_lr_0={"max_iter": 8, "early_stopping_rounds": 2})
    job = run_job(dsl, conf, TABLES)
    guest = job.outputs["hetero_lr_0"][("guest", 0)]
    validated = sorted(guest.metrics["validate"], key=lambda n: int(n.split("_")[1]))
    assert set(guest.metrics["train"]) == set(validated)          # train and validate data, every epoch
    aucs = [dict(map(tuple, guest.metrics["validate"][n]["data"]))["auc"] for n in validated]
    best = guest.summary["best_iteration"]
    assert aucs[best] == max(aucs[:best + 1])
    if guest.summary["iters"] < 8:                                 # stopped: no better AUC in the last rounds
        assert max(aucs[best + 1:]) <= aucs[best] and len(aucs) - 1 - best >= 2
    assert job.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]["validate"]["auc"] >= 0.9


def test_one_vs_rest_on_vehicle_and_its_predictions_from_the_model():
    # (the published early stopping also watches ks, whose first value is often its best: watch auc only)
    callbacks = {"callbacks": ["EarlyStopping"], "validation_freqs": 1, "early_stopping_rounds": 3,
                 "use_first_metric_only": True}
    dsl, conf = published("hetero_logistic_regression", "hetero_lr_ovr_validate",
                          hetero_lr_0={"max_iter": 4, "callback_param": callbacks})
    job = run_job(dsl, conf, TABLES)
    model = job.outputs["hetero_lr_0"][("guest", 0)].models["model"]["model"]
    assert model["need_one_vs_rest"] and model["one_vs_rest_result"]["one_vs_rest_classes"] == ["0", "1", "2", "3"]
    assert len(model["one_vs_rest_result"]["completed_models"]) == 4
    host = job.outputs["hetero_lr_0"][("host", 0)].models["model"]["model"]
    assert len(host["one_vs_rest_result"]["completed_models"]) == 4
    rows = {r[0]: r for r in job.table("hetero_lr_0", "guest").rows() if r[5] == "train"}
    detail = json.loads(next(iter(rows.values()))[4])
    assert set(detail) == {"0", "1", "2", "3"}
    summary = job.outputs["evaluation_0"][("guest", 0)].summary
    assert summary["hetero_lr_0"]["train"]["accuracy"] > 0.4            # 4 classes: chance is 0.25
    predicted = {r[0]: r for r in job.table("hetero_lr_1", "guest").rows()}
    assert all(predicted[s][2] == rows[s][2] for s in rows)              # the saved model predicts the same
    assert "0.iteration_0" in job.outputs["hetero_lr_0"][("guest", 0)].metrics["validate"]


def test_cross_validation_evaluates_every_fold_and_predicts_each_row_once():
    dsl, conf = published("hetero_logistic_regression", "hetero_lr_cv", hetero_lr_0={"max_iter": 2})
    job = run_job(dsl, conf, TABLES)
    guest = job.outputs["hetero_lr_0"][("guest", 0)]
    assert set(guest.metrics["validate"]) == {"fold_0", "fold_1", "fold_2"}
    assert guest.summary["validate"]["auc"]["mean"] > 0.9
    ids = [r[0] for r in job.table("hetero_lr_0", "guest").rows()]
    assert len(ids) == len(set(ids)) == 569


def test_warm_start_continues_from_the_input_model():
    dsl, conf = published("hetero_logistic_regression", "hetero_lr_warm_start", hetero_lr_0={"max_iter": 2},
                          hetero_lr_1={"max_iter": 4}, hetero_lr_2={"max_iter": 2})
    job = run_job(dsl, conf, TABLES)
    first = job.outputs["hetero_lr_0"][("guest", 0)]
    assert first.summary["checkpoints"] == [0, 1]                       # ModelCheckpoint, save_freq 1
    assert job.outputs["hetero_lr_1"][("guest", 0)].summary["iters"] == 4
    assert len(job.outputs["hetero_lr_1"][("arbiter", 0)].metrics["train"]["loss"]["data"]) == 2   # epochs 2, 3
    warm = job.outputs["hetero_lr_1"][("guest", 0)].models["model"]["model"]["weight"]
    cold = job.outputs["hetero_lr_2"][("guest", 0)].models["model"]["model"]["weight"]
    assert warm != cold


def test_hetero_multi_host_reads_shared_party_parameters():
    dsl, conf = published("hetero_logistic_regression", "hetero_lr_multi_host", hetero_lr_0={"max_iter": 3})
    conf["component_parameters"]["common"]["intersection_0"] = {"intersect_method": "raw"}
    job = run_job(dsl, conf, TABLES)
    assert set(job.outputs["hetero_lr_0"]) == {("guest", 0), ("host", 0), ("host", 1), ("arbiter", 0)}
    assert job.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]["train"]["auc"] > 0.9


def test_homo_one_vs_rest_cross_validation_and_validation():
    dsl, conf = published("homo_logistic_regression", "homo_lr_one_vs_all", homo_lr_0={"max_iter": 3})
    job = run_job(dsl, conf, TABLES)
    for role in ("guest", "host"):
        model = job.outputs["homo_lr_0"][(role, 0)].models["model"]["model"]
        assert model["one_vs_rest_result"]["one_vs_rest_classes"] == ["0", "1", "2", "3"]
    assert job.outputs["evaluation_0"][("guest", 0)].summary["homo_lr_0"]["train"]["accuracy"] > 0.4

    dsl, conf = published("homo_logistic_regression", "homo_lr_cv", homo_lr_0={"max_iter": 3})
    job = run_job(dsl, conf, TABLES)
    guest = job.outputs["homo_lr_0"][("guest", 0)]
    assert set(guest.metrics["validate"]) == {f"fold_{k}" for k in range(5)}
    assert guest.summary["validate"]["auc"]["mean"] > 0.9

    dsl, conf = published("homo_logistic_regression", "homo_lr_train_eval", homo_lr_0={"max_iter": 2})
    job = run_job(dsl, conf, TABLES)
    assert set(job.outputs["homo_lr_0"][("host", 0)].metrics["validate"]) == {"iteration_0", "iteration_1"}


@pytest.mark.parametrize("cls,params,message", [
    (HeteroLR, {"validation_freqs": 1, "callback_param": {"callbacks": ["EarlyStopping"]}},
     "validation_freqs and callback_param should not be set together"),
    (HeteroLR, {"callback_param": {"callbacks": ["Nope"]}}, "callback_param.callbacks"),
    (HeteroLR, {"early_stopping_rounds": 2}, "early_stopping_rounds needs validation_freqs"),
    (HeteroLR, {"callback_param": {"validation_freqs": 0}}, "validation_freqs must be > 0"),
    (HeteroLR, {"cv_param": {"need_cv": True, "n_splits": 1}}, "cv_param.n_splits must be >= 2"),
    (HeteroLR, {"multi_class": "multinomial"}, "multi_class='multinomial' is not supported"),
    (HomoLR, {"validation_freqs": 1, "early_stopping_rounds": 2}, "early stopping"),
])
def test_contradictory_or_unknown_training_parameters_are_refused(cls, params, message):
    with pytest.raises(ComponentError, match=message):
        cls(params)


def test_feature_engineering_binning_iv_on_encrypted_labels_selection_and_one_hot():
    dsl, conf = published("hetero_logistic_regression", "hetero_lr_feature_engineering", hetero_lr_0={"max_iter": 1})
    conf["component_parameters"]["common"]["hetero_feature_binning_0"]["encrypt_param"] = {"key_length": 512}
    job = run_job(dsl, conf, TABLES)
    guest = job.outputs["hetero_feature_binning_0"][("guest", 0)].models["model"]["model"]
    host = job.outputs["hetero_feature_binning_0"][("host", 0)].models["model"]["model"]
    host_ivs = guest["host_results"]["host_10000"]
    assert set(host_ivs) == {f"host_10000_{i}" for i in range(20)} and all(r["iv"] > 0 for r in host_ivs.values())
    assert all("iv" not in r for r in host["binning_result"].values())          # a host never learns an IV
    assert host["anonymous_header"]["host_10000_3"] == "x3"
    binned = next(job.table("hetero_feature_binning_0", "host").rows())
    assert {float(v) for v in binned[1:]} <= set(map(float, range(10)))        # transform_type bin_num
    kept_guest = job.outputs["hetero_feature_selection_0"][("guest", 0)].models["model"]["model"]["left_cols"]
    kept_host = job.outputs["hetero_feature_selection_0"][("host", 0)].models["model"]["model"]["left_cols"]
    low = [f for f, r in guest["binning_result"].items() if r["iv"] < 1.0]
    assert kept_guest and not set(low) & set(kept_guest)                        # iv_value_thres 1.0
    assert kept_host and all(host_ivs[f"host_10000_{int(f[1:])}"]["iv"] >= 1.0 for f in kept_host)
    one_hot = job.table("one_hot_encoder_0", "guest").schema["features"]
    assert one_hot[0] == f"{kept_guest[0]}_0" and len(one_hot) == 10 * len(kept_guest)
    assert "auc" in job.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]["train"]


def test_sparse_rows_and_sample_weights_reach_hetero_lr():
    dsl, conf = published("hetero_logistic_regression", "hetero_lr_sparse", hetero_lr_0={"max_iter": 1})
    job = run_job(dsl, conf, TABLES)
    table = job.table("data_transform_0", "host")
    assert table.schema["sparse"] and table.schema["header"] == ["features"] and len(table.schema["features"]) == 20
    assert all(":" in pair for pair in next(table.rows())[1].split())
    assert job.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]["train"]["auc"] > 0.9

    host_weights = []
    for weighting in ({"class_weight": {"0": 1, "1": 2}}, {"class_weight": {"0": 1, "1": 1}}):
        dsl, conf = published("hetero_logistic_regression", "hetero_lr_sample_weights",
                              hetero_lr_0={"max_iter": 1, "batch_size": -1}, sample_weight_0=weighting)
        job = run_job(dsl, conf, TABLES)
        host_weights.append(job.outputs["hetero_lr_0"][("host", 0)].models["model"]["model"]["weight"])
        if weighting["class_weight"]["1"] == 2:
            weighted = job.table("sample_weight_0", "guest")
            assert weighted.schema["weight_name"] == "sample_weight"
            at = 1 + weighted.schema["header"].index("sample_weight")
            assert {(r[1], r[at]) for r in weighted.rows()} == {("0", "1.0"), ("1", "2.0")}
    # the hosts' gradients are weighted by the guest's weights (which they never see)
    assert any(abs(host_weights[0][f] - host_weights[1][f]) > 1e-3 for f in host_weights[0])


def test_sample_weights_count_only_by_their_ratios():
    """FATE's HeteroLR guest rescales the weights to mean 1 before fitting (scale_sample_weight): class
    weights 2/2 train exactly the model of 1/1, and 1/2 the model of 0.5/1."""
    models = []
    for weighting in ({"0": 1, "1": 1}, {"0": 2, "1": 2}, {"0": 1, "1": 2}, {"0": 0.5, "1": 1}):
        dsl, conf = published("hetero_logistic_regression", "hetero_lr_sample_weights",
                              hetero_lr_0={"max_iter": 2, "batch_size": -1}, sample_weight_0={"class_weight": weighting})
        job = run_job(dsl, conf, TABLES)
        models.append(job.outputs["hetero_lr_0"][("host", 0)].models["model"]["model"]["weight"])
    same = lambda a, b: all(abs(a[f] - b[f]) < 1e-6 for f in a)  # noqa: E731
    assert same(models[0], models[1]) and same(models[2], models[3])
    assert not same(models[0], models[2])


@pytest.mark.parametrize("job", ["hetero_lr_ovr_validate", "hetero_lr_cv"])
def test_hetero_lr_computes_what_fates_algorithm_computes(job):
    """The published job (a few epochs) gives the figure of FATE's HeteroLR rules re-done in plain numpy
    on the joined data (bench/fate_numpy.py): early stopping on auc and FATE's KS per class, folds."""
    pytest.importorskip("sklearn")
    import numpy as np

    from bench import fate_numpy
    dsl, conf = published("hetero_logistic_regression", job, hetero_lr_0={"max_iter": 4})
    done = run_job(dsl, conf, TABLES)
    if job.endswith("_cv"):
        figure = done.outputs["hetero_lr_0"][("guest", 0)].summary["validate"]["auc"]["mean"]
    else:
        figure = done.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]["train"]["accuracy"]
    assert figure == pytest.approx(fate_numpy.run_job(job, np.random.default_rng(0), max_iter=4), abs=1e-4)
