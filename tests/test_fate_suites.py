"""FATE 1.11's own LR test suites, unchanged (tests/data/fate/*_logistic_regression), run by the suite
runner (client/fate_suite.py, what `fate_test suite` does) through FATE's real client, flow_sdk 1.11.3,
against a real server: every job succeeds, predict jobs included (deployed with their predict DSL).
To stay within the suite's time, the runner lowers max_iter, n_splits and the Paillier key length;
`make bench` runs them at the published parameters."""
from __future__ import annotations

import os
from urllib.parse import urlparse

import pytest

from client import fate_suite

flow_sdk_client = pytest.importorskip("flow_sdk.client")

DATA = os.path.join(os.path.dirname(__file__), "data", "fate")
FAST = {"max_iter": 1, "cv_param": {"n_splits": 2}}


@pytest.fixture(scope="module")
def fc(server):
    url = urlparse(server.http_url)
    return flow_sdk_client.FlowClient(url.hostname, url.port, "v1")


def run(fc, suite: str, overrides: dict) -> dict[str, fate_suite.JobResult]:
    path = os.path.join(DATA, suite, f"{suite}_testsuite.json")
    lines: list[str] = []
    results = fate_suite.run(fc, path, data_dir=DATA, overrides=overrides, timeout=600, poll=0.2, parallel=2,
                             echo=lines.append)
    print(fate_suite.table(results))
    return {r.name: r for r in results}


def test_homo_lr_suite_passes_unchanged(fc):
    results = run(fc, "homo_logistic_regression", {"HomoLR": FAST})
    assert {n: r.status for n, r in results.items()} == {n: "success" for n in results}, \
        {n: r.error for n, r in results.items() if r.error}
    assert len(results) == 7
    assert results["train"].metric == "auc" and results["train"].value > 0.9
    assert results["cv"].metric == "cv mean auc" and results["cv"].value > 0.9
    assert results["one_vs_all"].metric == "accuracy" and results["one_vs_all"].value > 0.3


def test_hetero_lr_suite_passes_unchanged(fc):
    results = run(fc, "hetero_logistic_regression",
                  {"HeteroLR": {**FAST, "encrypt_param": {"key_length": 512}}})
    assert {n: r.status for n, r in results.items()} == {n: "success" for n in results}, \
        {n: r.error for n, r in results.items() if r.error}
    assert len(results) == 15
    # one epoch of full batches already ranks well (hetero_lr_normal's batches of 320 need more epochs)
    for name in ("hetero_lr_sparse", "hetero_lr_multi_host", "hetero_lr_validate", "hetero_lr_early_stop"):
        assert results[name].metric == "auc" and results[name].value > 0.85, (name, results[name])
    assert results["hetero_lr_cv"].metric == "cv mean auc" and results["hetero_lr_cv"].value > 0.85
    assert results["hetero_lr_one_vs_all"].metric == "accuracy" and results["hetero_lr_one_vs_all"].value > 0.3


def test_overrides_are_checked_and_reach_only_their_module():
    assert fate_suite.parse_overrides(["HeteroLR.max_iter=3", "HeteroLR.cv_param.n_splits=2", "HomoLR.x=abc"]) == {
        "HeteroLR": {"max_iter": 3, "cv_param": {"n_splits": 2}}, "HomoLR": {"x": "abc"}}
    with pytest.raises(ValueError, match="expected MODULE.parameter=value"):
        fate_suite.parse_overrides(["max_iter=3"])
    dsl = {"components": {"lr": {"module": "HeteroLR"}, "ev": {"module": "Evaluation"}}}
    conf = fate_suite.apply_overrides(dsl, {"component_parameters": {"common": {"lr": {"cv_param": {"shuffle": False}}}}},
                                      {"HeteroLR": {"cv_param": {"n_splits": 2}}})
    assert conf["component_parameters"]["common"] == {"lr": {"cv_param": {"shuffle": False, "n_splits": 2}}}
