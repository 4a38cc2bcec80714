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
    assert out.models["model"]["model"]["features"] == [f"x{i}" for i in range(10)]


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
    ({"output_format": "sparse"}, "output_format='sparse' is not supported"),
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


def test_intersection_rsa_refuses_short_keys_and_unknown_methods():
    with pytest.raises(ComponentError, match="key_length must be >= 1024"):
        run_component("Intersection", HETERO_ROLES, [PartySpec("guest", 0, {"rsa_params": {"key_length": 512}})])
    with pytest.raises(ComponentError, match="intersect_method='psi' is not supported"):
        run_component("Intersection", HETERO_ROLES, [PartySpec("guest", 0, {"intersect_method": "psi"})])
    with pytest.raises(ComponentError, match="unknown key.*key_len in rsa_params"):
        run_component("Intersection", HETERO_ROLES, [PartySpec("guest", 0, {"rsa_params": {"key_len": 1024}})])
