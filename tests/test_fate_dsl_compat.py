"""FATE DSL/conf notations the published examples use: shared party indexes ("0|1") and the
DataIO name of FATE 1.6-era DSLs."""
from __future__ import annotations

import json

import pytest

from server import errors
from server.flow import dsl
from server.flow.registry import Registry

DSL = {"components": {"reader_0": {"module": "Reader", "output": {"data": ["data"]}},
                      "dataio_0": {"module": "DataIO", "input": {"data": {"data": ["reader_0.data"]}},
                                   "output": {"data": ["data"], "model": ["model"]}}}}


def conf(host_params: dict) -> dict:
    return {"dsl_version": 2, "initiator": {"role": "guest", "party_id": 9999},
            "role": {"guest": [9999], "host": [10000, 10001, 10002]},
            "component_parameters": {"common": {"dataio_0": {"with_label": False}},
                                     "role": {"host": host_params}}}


def test_shared_party_indexes_apply_to_each_named_host():
    plan = dsl.parse(json.dumps(DSL), json.dumps(conf({
        "all": {"dataio_0": {"label_name": "y"}},
        "0|1": {"reader_0": {"table": {"name": "shared", "namespace": "experiment"}}},
        "1": {"reader_0": {"table": {"name": "own", "namespace": "experiment"}}},
        "2": {"reader_0": {"table": {"name": "third", "namespace": "experiment"}}}})), Registry().modules)
    tables = [plan.params("reader_0", "host", p)["table"]["name"] for p in (10000, 10001, 10002)]
    assert tables == ["shared", "own", "third"]          # the exact index wins over the shared key
    assert plan.params("dataio_0", "host", 10001) == {"with_label": False, "label_name": "y"}


@pytest.mark.parametrize("key", ["3", "0|3", "x", "0-1"])
def test_an_index_key_naming_no_party_is_refused(key):
    with pytest.raises(errors.InvalidArgument, match=f"key {key!r} is not a party index of host"):
        dsl.parse(json.dumps(DSL), json.dumps(conf({key: {}})), Registry().modules)


def test_dataio_runs_as_data_transform():
    registry = Registry()
    assert "DataIO" in registry.modules and registry.get("DataIO") == registry.get("DataTransform")
