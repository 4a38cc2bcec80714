"""FATE components (server/flow/components) run whole pipelines in the standalone context
(server/flow/standalone.py: one thread per party, in-memory tables and federation) on FATE's
published breast data sets and example confs (tests/data/fate/)."""
from __future__ import annotations

import json
import os

import pytest

from server.flow.components.base import ComponentError
from server.flow.standalone import MemoryTable, PartySpec, run_component, run_job

DATA = os.path.join(os.path.dirname(__file__), "data", "fate")
HETERO_ROLES = {"guest": [9999], "host": [10000], "arbiter": [10000]}


def csv_table(name: str) -> MemoryTable:
    return MemoryTable.from_csv(os.path.join(DATA, f"{name}.csv"))


def load_json(name: str) -> dict:
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


def transform(table: MemoryTable, role="guest", **params):
    out = run_component("DataTransform", {role: [1]}, [PartySpec(role, 0, params, {"data": [table]})])
    return out[(role, 0)]


# -- DataTransform --------------------------------------------------------------------------------
def test_data_transform_label_and_features():
    out = transform(csv_table("breast_hetero_guest"), with_label=True, output_format="dense")
    table = out.tables["data"]
    assert table.schema == {"sid": "id", "header": ["y"] + [f"x{i}" for i in range(10)], "label_name": "y",
                            "features": [f"x{i}" for i in range(10)]}
    assert table.count == 569
    first = next(table.rows())
    assert first[0] == "133" and first[1] == "1" and float(first[2]) == pytest.approx(0.254879)
    saved = out.models["model"]      # FATE's DataIOParam / DataIOMeta names
    assert saved["model"]["header"] == [f"x{i}" for i in range(10)] and saved["model"]["sid_name"] == "id"
    assert saved["meta"]["with_label"] is True and saved["meta"]["label_name"] == "y"


def test_data_transform_missing_fill_and_predict_mode():
    raw = MemoryTable("t", "raw", {"sid": "id", "header": ["y", "a", "b"]},
                      [["1", "1", "2", "NA"], ["2", "0", "", "4"], ["3", "1", "6", "-999"]])
    out = transform(raw, with_label=True, missing_fill=True, missing_fill_method="mean",
                    outlier_replace=True, outlier_replace_method="designated", outlier_impute=[-999],
                    outlier_replace_value=7)
    rows = list(out.tables["data"].rows())
    assert [r[2:] for r in rows] == [["2.0", "4.0"], ["4.0", "4.0"], ["6.0", "7.0"]]
    # predict mode: the saved layout (mean 4.0 for column a) applies to new data; params are not needed
    new = MemoryTable("t", "new", {"sid": "id", "header": ["y", "a", "b"]}, [["9", "0", "null", "1"]])
    pred = run_component("DataTransform", {"guest": [1]},
                         [PartySpec("guest", 0, {}, {"data": [new]}, {"model": [out.models["model"]]})])
    assert list(pred[("guest", 0)].tables["data"].rows()) == [["9", "0", "4.0", "1.0"]]


@pytest.mark.parametrize("params, message", [
    ({"with_lable": True}, "unknown parameter(s) with_lable"),
    ({"output_format": "tag"}, "output_format='tag' is not supported"),
    ({"missing_fill_method": "mean"}, "missing_fill is false"),
    ({"with_label": True, "label_name": "label"}, "label_name 'label' is not a column"),
])
def test_data_transform_refuses_bad_parameters(params, message):
    with pytest.raises(ComponentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        transform(csv_table("breast_hetero_guest"), **params)


def test_data_transform_missing_value_without_fill_is_a_clear_error():
    raw = MemoryTable("t", "raw", {"sid": "id", "header": ["a"]}, [["1", "NA"]])
    with pytest.raises(ComponentError, match="row 1, column a: missing value"):
        transform(raw)


# -- Intersection ---------------------------------------------------------------------------------
def id_table(ids, name):
    return MemoryTable("t", name, {"sid": "id", "header": ["v"]}, [[i, f"{name}-{i}"] for i in ids])


@pytest.mark.parametrize("params", [
    {"intersect_method": "rsa", "rsa_params": {"key_length": 1024, "hash_method": "sha256",
                                               "final_hash_method": "sha256"}},
    {"intersect_method": "raw"},
    {"intersect_method": "raw", "raw_params": {"use_hash": True, "hash_method": "sha256", "join_role": "host"}},
])
def test_intersection_partial_overlap(params):
    guest_ids = [str(i) for i in range(0, 60)]
    host_ids = [str(i) for i in range(40, 100)] + ["x1"]
    out = run_component("Intersection", HETERO_ROLES, [
        PartySpec("guest", 0, params, {"data": [id_table(guest_ids, "g")]}),
        PartySpec("host", 0, params, {"data": [id_table(host_ids, "h")]}),
    ])
    expected = [str(i) for i in range(40, 60)]
    guest_rows = list(out[("guest", 0)].tables["data"].rows())
    host_rows = list(out[("host", 0)].tables["data"].rows())
    assert [r[0] for r in guest_rows] == expected and [r[0] for r in host_rows] == expected
    assert guest_rows[0] == ["40", "g-40"] and host_rows[0] == ["40", "h-40"]     # each keeps its own columns
    assert out[("guest", 0)].summary["intersect_num"] == 20


def test_intersection_rsa_sends_no_raw_id():
    guest_ids = [f"guest-secret-{i}" for i in range(30)]
    host_ids = [f"host-secret-{i}" for i in range(30)] + guest_ids[:10]
    traffic: list = []
    params = {"rsa_params": {"key_length": 1024}}
    out = run_component("Intersection", HETERO_ROLES, [
        PartySpec("guest", 0, params, {"data": [id_table(guest_ids, "g")]}),
        PartySpec("host", 0, params, {"data": [id_table(host_ids, "h")]}),
    ], traffic=traffic)
    assert [r[0] for r in out[("guest", 0)].tables["data"].rows()] == guest_ids[:10]
    assert {t[0] for t in traffic} == {"rsa_public_key", "host_signed_ids", "guest_blinded_ids", "guest_signed_ids",
                                       "intersect_ids"}
    assert not any(b"secret" in payload for *_, payload in traffic)


def test_intersection_rsa_refuses_short_keys_and_unknown_methods():
    with pytest.raises(ComponentError, match="key_length must be >= 1024"):
        run_component("Intersection", HETERO_ROLES, [PartySpec("guest", 0, {"rsa_params": {"key_length": 512}})])
    with pytest.raises(ComponentError, match="intersect_method='psi' is not supported"):
        run_component("Intersection", HETERO_ROLES, [PartySpec("guest", 0, {"intersect_method": "psi"})])
    with pytest.raises(ComponentError, match="unknown key.*key_len in rsa_params"):
        run_component("Intersection", HETERO_ROLES, [PartySpec("guest", 0, {"rsa_params": {"key_len": 1024}})])


# -- the published hetero LR job ------------------------------------------------------------------
def fast_hetero_conf(max_iter: int = 8) -> dict:
    """FATE's published conf, with a shorter run and smaller keys so the test stays fast, and a seed
    for the batch shuffle so it is deterministic."""
    conf = load_json("hetero_lr_normal_conf.json")
    common = conf["component_parameters"]["common"]
    common["hetero_lr_0"]["max_iter"] = max_iter
    common["hetero_lr_0"]["encrypt_param"]["key_length"] = 512
    common["hetero_lr_0"]["init_param"]["random_seed"] = 11
    return conf


HETERO_TABLES = {("experiment", "breast_hetero_guest"): csv_table("breast_hetero_guest"),
                 ("experiment", "breast_hetero_host"): csv_table("breast_hetero_host")}


@pytest.fixture(scope="module")
def hetero_job():
    return run_job(load_json("hetero_lr_normal_dsl.json"), fast_hetero_conf(), HETERO_TABLES)


def test_hetero_lr_pipeline_reaches_fate_auc(hetero_job):
    evaluation = hetero_job.outputs["evaluation_0"][("guest", 0)]
    auc = evaluation.summary["hetero_lr_0"]["train"]["auc"]
    assert auc >= 0.95
    single = evaluation.metrics["train"]["hetero_lr_0"]
    assert dict(map(tuple, single["data"]))["auc"] == auc and single["meta"]["metric_type"] == "EVALUATION_SUMMARY"
    roc = evaluation.metrics["train"]["hetero_lr_0_roc"]
    assert roc["meta"]["metric_type"] == "ROC_EVALUATION" and roc["data"][-1] == [1.0, 1.0]
    assert {"hetero_lr_0_ks_fpr", "hetero_lr_0_ks_tpr", "hetero_lr_0_lift", "hetero_lr_0_gain",
            "hetero_lr_0_precision", "hetero_lr_0_recall", "hetero_lr_0_accuracy"} <= set(evaluation.metrics["train"])
    # the loss is the arbiter's (it alone decrypts it), one point per iteration, decreasing overall
    loss = hetero_job.outputs["hetero_lr_0"][("arbiter", 0)].metrics["train"]["loss"]
    assert loss["meta"] == {"metric_type": "LOSS", "unit_name": "iters"}
    assert [p[0] for p in loss["data"]] == list(range(len(loss["data"])))
    assert loss["data"][-1][1] < min(loss["data"][0][1], 0.69)     # below log 2, the loss of w = 0
    # predictions on the guest only, in FATE's columns
    table = hetero_job.table("hetero_lr_0", "guest")
    assert table.schema["header"] == ["label", "predict_result", "predict_score", "predict_detail", "type"]
    assert table.count == 569 and next(table.rows())[-1] == "train"
    assert "data" not in hetero_job.outputs["hetero_lr_0"][("host", 0)].tables
    # each party's model holds only its own features
    guest_model = hetero_job.outputs["hetero_lr_0"][("guest", 0)].models["model"]["model"]
    host_model = hetero_job.outputs["hetero_lr_0"][("host", 0)].models["model"]["model"]
    assert guest_model["header"] == [f"x{i}" for i in range(10)] and len(host_model["weight"]) == 20
    meta = hetero_job.outputs["hetero_lr_0"][("guest", 0)].models["model"]["meta"]   # FATE's LRModelMeta names
    assert meta["optimizer"] == "rmsprop" and meta["fit_intercept"] is True and meta["predict_param"] == {"threshold": 0.5}


def test_hetero_lr_predict_job_reproduces_train_predictions(hetero_job):
    predict_dsl = {"components": {
        "reader_0": {"module": "Reader", "output": {"data": ["data"]}},
        "data_transform_0": {"module": "DataTransform", "input": {"data": {"data": ["reader_0.data"]},
                                                                  "model": ["pipeline.data_transform_0.model"]}},
        "intersection_0": {"module": "Intersection", "input": {"data": {"data": ["data_transform_0.data"]}}},
        "hetero_lr_0": {"module": "HeteroLR", "input": {"data": {"test_data": ["intersection_0.data"]},
                                                        "model": ["pipeline.hetero_lr_0.model"]}},
    }}
    conf = fast_hetero_conf()
    conf["job_parameters"] = {"common": {"job_type": "predict"}}
    for cpn in ("data_transform_0", "hetero_lr_0"):     # predict takes the model's settings, not the conf's
        conf["component_parameters"]["common"].pop(cpn)
        for party in conf["component_parameters"]["role"].values():
            party["0"].pop(cpn, None)
    predicted = run_job(predict_dsl, conf, HETERO_TABLES, pipeline_models=hetero_job.models())
    trained = {r[0]: r for r in hetero_job.table("hetero_lr_0", "guest").rows()}
    rows = list(predicted.table("hetero_lr_0", "guest").rows())
    assert len(rows) == 569
    for row in rows:
        assert row[:3] == trained[row[0]][:3] and float(row[3]) == pytest.approx(float(trained[row[0]][3]), abs=1e-12)
        assert row[5] == "test"


def test_hetero_lr_unknown_parameter_is_refused():
    with pytest.raises(ComponentError, match=r"HeteroLR: unknown parameter\(s\) learning_rat"):
        run_component("HeteroLR", HETERO_ROLES, [PartySpec("guest", 0, {"learning_rat": 0.1})])
    with pytest.raises(ComponentError, match="optimizer sqn is not supported"):
        run_component("HeteroLR", HETERO_ROLES, [PartySpec("guest", 0, {"optimizer": "sqn"})])
    with pytest.raises(ComponentError, match="unknown key.*init_methd in init_param"):
        run_component("HeteroLR", HETERO_ROLES, [PartySpec("guest", 0, {"init_param": {"init_methd": "zeros"}})])


# -- the published homo LR job --------------------------------------------------------------------
HOMO_TABLES = {("experiment", "breast_homo_guest"): csv_table("breast_homo_guest"),
               ("experiment", "breast_homo_host"): csv_table("breast_homo_host")}


@pytest.mark.parametrize("secure", [True, False])
def test_homo_lr_pipeline(secure):
    conf = load_json("homo_lr_train_conf.json")
    conf["component_parameters"]["common"]["homo_lr_0"]["secure_aggregate"] = secure
    job = run_job(load_json("homo_lr_train_dsl.json"), conf, HOMO_TABLES)
    summary = job.outputs["evaluation_0"][("guest", 0)].summary
    assert summary["homo_lr_0"]["train"]["auc"] >= 0.95
    assert "evaluation_0" in job.outputs and ("host", 0) in job.outputs["evaluation_0"]
    assert job.outputs["evaluation_0"][("host", 0)].summary == {}          # need_run: false on the host
    # one model for everyone: guest and host end with the same weights
    guest = job.outputs["homo_lr_0"][("guest", 0)].models["model"]["model"]
    host = job.outputs["homo_lr_0"][("host", 0)].models["model"]["model"]
    assert guest["weight"] == pytest.approx(host["weight"]) and guest["intercept"] == pytest.approx(host["intercept"])
    loss = job.outputs["homo_lr_0"][("arbiter", 0)].metrics["train"]["loss"]["data"]
    assert loss[-1][1] < loss[0][1]
    # the scaled features are standardised on each party
    scaled = job.table("scale_0", "guest")
    assert scaled.schema["features"][0] == "x0" and scaled.count == 227


def test_homo_lr_refuses_paillier_and_weight_diff():
    with pytest.raises(ComponentError, match="encrypt_param.method Paillier is not supported"):
        run_component("HomoLR", HETERO_ROLES, [PartySpec("guest", 0, {"encrypt_param": {"method": "Paillier"}})])
    with pytest.raises(ComponentError, match="early_stop='weight_diff' is not supported"):
        run_component("HomoLR", HETERO_ROLES, [PartySpec("guest", 0, {"early_stop": "weight_diff"})])


def test_feature_scale_min_max_and_predict_mode():
    raw = MemoryTable("t", "raw", {"sid": "id", "header": ["a", "b"], "features": ["a", "b"]},
                      [["1", "0", "10"], ["2", "5", "20"], ["3", "10", "30"]])
    out = run_component("FeatureScale", {"guest": [1]}, [PartySpec(
        "guest", 0, {"method": "min_max_scale", "scale_names": ["b"], "scale_col_indexes": []}, {"data": [raw]})])
    rows = list(out[("guest", 0)].tables["data"].rows())
    assert [r[1:] for r in rows] == [["0.0", "0.0"], ["5.0", "0.5"], ["10.0", "1.0"]]
    new = MemoryTable("t", "new", raw.schema, [["9", "7", "40"]])
    again = run_component("FeatureScale", {"guest": [1]}, [PartySpec(
        "guest", 0, {}, {"data": [new]}, {"model": [out[("guest", 0)].models["model"]]})])
    assert list(again[("guest", 0)].tables["data"].rows()) == [["9", "7.0", "1.0"]]     # clipped to the fitted max
    with pytest.raises(ComponentError, match="no feature column c"):
        run_component("FeatureScale", {"guest": [1]}, [PartySpec("guest", 0, {"scale_names": ["c"]}, {"data": [raw]})])


# -- Evaluation, need_run, the registry -----------------------------------------------------------
def predictions(rows, name="model_0"):
    header = ["label", "predict_result", "predict_score", "predict_detail", "type"]
    return MemoryTable("t", "p", {"sid": "id", "header": header}, rows, source=name)


def evaluate(table, **params):
    return run_component("Evaluation", {"guest": [1]}, [PartySpec("guest", 0, params, {"data": [table]})])[("guest", 0)]


def test_evaluation_ks_is_fates_at_100_cuts():
    """FATE's KS looks at 100 thresholds only (the scores at each 1% of the ranked rows, positive when
    strictly above): 200 rows whose top 101 are positive separate perfectly (exact KS 1), but at every
    other row FATE sees at best the top 100: KS 100/101."""
    rows = [[str(i), 1 if i < 101 else 0, 1, (200 - i) / 200, "{}", "train"] for i in range(200)]
    out = evaluate(predictions(rows), metrics=["auc", "ks"])
    assert out.summary == {"model_0": {"train": {"auc": 1.0, "ks": round(100 / 101, 6)}}}


def test_evaluation_binary_values():
    # scores rank 3 of the 4 (positive, negative) pairs right: AUC 0.75; best KS 0.5
    rows = [[str(i), y, 1 if s > 0.5 else 0, s, "{}", "train"] for i, (y, s) in
            enumerate([(1, 0.9), (0, 0.8), (1, 0.7), (0, 0.1)])]
    out = evaluate(predictions(rows))
    assert out.summary == {"model_0": {"train": {"auc": 0.75, "ks": 0.5}}}
    gain = out.metrics["train"]["model_0_gain"]["data"]
    assert gain[-1] == [1.0, 1.0]          # everyone predicted positive: all positives found
    cm = out.metrics["train"]["model_0_confusion_mat"]["meta"]
    assert cm["metric_type"] == "CONFUSION_MAT" and cm["tp"][-1] == 2 and cm["fp"][-1] == 2


def test_evaluation_regression_and_multi():
    rows = [["1", 3.0, 2.0, 0, "{}", "test"], ["2", 1.0, 2.0, 0, "{}", "test"]]
    out = evaluate(predictions(rows), eval_type="regression",
                   metrics=["root_mean_squared_error", "mean_absolute_error"])
    assert out.summary["model_0"]["test"] == {"root_mean_squared_error": 1.0, "mean_absolute_error": 1.0}
    rows = [["1", 0, 0, 0, "{}", "train"], ["2", 1, 2, 0, "{}", "train"], ["3", 2, 2, 0, "{}", "train"]]
    out = evaluate(predictions(rows), eval_type="multi")
    assert out.summary["model_0"]["train"]["accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    with pytest.raises(ComponentError, match="metric 'auc' does not apply to eval_type regression"):
        evaluate(predictions(rows), eval_type="regression", metrics=["auc"])


def test_need_run_false_passes_the_input_through():
    table = csv_table("breast_hetero_host")
    out = run_component("Intersection", HETERO_ROLES, [PartySpec("host", 0, {"need_run": False}, {"data": [table]})])
    assert list(out[("host", 0)].tables["data"].rows()) == list(table.rows())


def test_unknown_module_is_a_component_error():
    with pytest.raises(ComponentError, match="unknown component module 'HeteroSecureBoost'"):
        run_component("HeteroSecureBoost", HETERO_ROLES, [])


def test_standalone_dry_run_command(capsys):
    from server.flow.standalone import main
    args = ["--dsl", os.path.join(DATA, "homo_lr_train_dsl.json"), "--conf", os.path.join(DATA, "homo_lr_train_conf.json")]
    assert main(args) == 1
    assert "Reader: no table experiment.breast_homo_guest" in capsys.readouterr().err
    tables = [f"--table=experiment.{n}={os.path.join(DATA, n + '.csv')}" for n in ("breast_homo_guest", "breast_homo_host")]
    assert main(args + tables) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["evaluation_0"]["guest:9999"]["summary"]["homo_lr_0"]["train"]["auc"] >= 0.95
    assert report["homo_lr_0"]["arbiter:10000"]["metrics"] == {"train": ["loss"]}


def test_homo_lr_three_clients_and_predict_mode():
    conf = load_json("homo_lr_train_conf.json")
    conf["role"]["host"] = [10000, 10001]
    hosts = conf["component_parameters"]["role"]["host"]
    hosts["1"] = json.loads(json.dumps(hosts["0"]))
    conf["component_parameters"]["common"]["homo_lr_0"]["max_iter"] = 10
    conf["component_parameters"]["common"]["homo_lr_0"]["predict_param"] = {"threshold": 0.9}
    job = run_job(load_json("homo_lr_train_dsl.json"), conf, HOMO_TABLES)
    models = [job.outputs["homo_lr_0"][party].models["model"]["model"] for party in
              (("guest", 0), ("host", 0), ("host", 1))]
    for m in models[1:]:        # the pairwise masks cancelled: everyone holds the same aggregate
        assert m["weight"] == pytest.approx(models[0]["weight"], abs=1e-6)
    scaled = job.table("scale_0", "host", 1)
    predicted = run_component("HomoLR", conf["role"], [PartySpec(
        "host", 1, {}, {"test_data": [scaled]}, {"model": [job.outputs["homo_lr_0"][("host", 1)].models["model"]]})])
    trained = {r[0]: r for r in job.table("homo_lr_0", "host", 1).rows()}
    for row in predicted[("host", 1)].tables["data"].rows():   # predict_result by the trained threshold, 0.9
        assert row[:4] == trained[row[0]][:4] and row[5] == "test"
    assert any(0.5 < float(r[3]) <= 0.9 and r[2] == "0" for r in trained.values())


def test_hetero_lr_without_labels_fails_every_party_with_the_cause():
    conf = fast_hetero_conf(2)
    conf["component_parameters"]["role"]["guest"]["0"]["data_transform_0"]["with_label"] = False
    with pytest.raises(ComponentError, match="training data has no label"):
        run_job(load_json("hetero_lr_normal_dsl.json"), conf, HETERO_TABLES, timeout=60)


@pytest.mark.parametrize("settings", [
    {"optimizer": "sgd", "penalty": "L1", "learning_rate": 0.5, "batch_size": -1, "early_stop": "abs"},
    {"optimizer": "adam", "penalty": "L2", "early_stop": "weight_diff", "init_param": {"init_method": "random_uniform",
                                                                                       "random_seed": 7}},
])
def test_hetero_lr_optimizers_penalties_and_validate_data(settings):
    dsl = load_json("hetero_lr_normal_dsl.json")
    dsl["components"]["hetero_lr_0"]["input"]["data"]["validate_data"] = ["intersection_0.data"]
    conf = fast_hetero_conf(4)
    lr = conf["component_parameters"]["common"]["hetero_lr_0"]
    lr.update(settings)
    if "init_param" in settings:
        lr["init_param"] = settings["init_param"]
    job = run_job(dsl, conf, HETERO_TABLES)
    summary = job.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]
    assert set(summary) == {"train", "validate"}
    assert summary["train"]["auc"] >= 0.9 and summary["validate"]["auc"] == summary["train"]["auc"]
    types = [row[5] for row in job.table("hetero_lr_0", "guest").rows()]
    assert types.count("train") == 569 and types.count("validate") == 569


def test_hetero_lr_two_hosts():
    """Two hosts (both with the host features): the guest sums their encrypted forwards; no loss
    exists without cross-host terms, so FATE's rule holds: early_stop weight_diff only."""
    conf = fast_hetero_conf(3)
    conf["role"]["host"] = [10000, 10001]
    hosts = conf["component_parameters"]["role"]["host"]
    hosts["1"] = json.loads(json.dumps(hosts["0"]))
    with pytest.raises(ComponentError, match="only early_stop weight_diff"):
        run_component("HeteroLR", conf["role"], [PartySpec("guest", 0, {"early_stop": "diff"},
                                                           {"train_data": [csv_table("breast_hetero_guest")]})])
    common = conf["component_parameters"]["common"]
    common["intersection_0"] = {"intersect_method": "raw"}      # the subject here is HeteroLR
    common["hetero_lr_0"].update(early_stop="weight_diff", learning_rate=0.05)
    job = run_job(load_json("hetero_lr_normal_dsl.json"), conf, HETERO_TABLES)
    assert job.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]["train"]["auc"] >= 0.9
    assert "train" not in job.outputs["hetero_lr_0"][("arbiter", 0)].metrics
    weights = [job.outputs["hetero_lr_0"][("host", i)].models["model"]["model"]["weight"] for i in (0, 1)]
    assert weights[0] == pytest.approx(weights[1])       # same features, same gradients, same steps
