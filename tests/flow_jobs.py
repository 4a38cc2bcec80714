"""FATE jobs the flow tests submit: Reader -> DataTransform -> Probe for guest 9999 and host 10000,
on FATE's breast_hetero data (tests/data/fate/), plus a slow Probe job for stop and queue tests."""
from __future__ import annotations

import os

DATA = os.path.join(os.path.dirname(__file__), "data", "fate")
GUEST, HOST = 9999, 10000
ROWS = 569


def csv_path(name: str) -> str:
    return os.path.join(DATA, f"{name}.csv")


def upload_conf(namespace: str, table: str, file: str | None = None) -> dict:
    return {"file": file or csv_path(table), "head": 1, "partition": 4, "namespace": namespace,
            "table_name": table}


def pipeline(namespace: str) -> tuple[dict, dict]:
    """(dsl, conf) of Reader -> DataTransform -> Probe on both parties."""
    dsl = {"components": {
        "reader_0": {"module": "Reader", "output": {"data": ["data"]}},
        "data_transform_0": {"module": "DataTransform", "input": {"data": {"data": ["reader_0.data"]}},
                             "output": {"data": ["data"], "model": ["model"]}},
        "probe_0": {"module": "Probe", "input": {"data": {"data": ["data_transform_0.data"]}},
                    "output": {"data": ["data"], "model": ["model"]}},
    }}
    conf = {
        "dsl_version": 2,
        "initiator": {"role": "guest", "party_id": GUEST},
        "role": {"guest": [GUEST], "host": [HOST]},
        "job_parameters": {"common": {"description": "flow test pipeline"}},
        "component_parameters": {
            "common": {"data_transform_0": {"output_format": "dense"}, "probe_0": {"message": "probed"}},
            "role": {
                "guest": {"0": {"reader_0": {"table": {"name": "breast_hetero_guest", "namespace": namespace}},
                                "data_transform_0": {"with_label": True}}},
                "host": {"0": {"reader_0": {"table": {"name": "breast_hetero_host", "namespace": namespace}},
                               "data_transform_0": {"with_label": False}}},
            },
        },
    }
    return dsl, conf


def slow_job(seconds: float = 60) -> tuple[dict, dict]:
    """(dsl, conf) of one Probe that takes `seconds` on both parties (stopped by the tests)."""
    dsl = {"components": {"probe_0": {"module": "Probe", "output": {"model": ["model"]}}}}
    conf = {"dsl_version": 2, "initiator": {"role": "guest", "party_id": GUEST},
            "role": {"guest": [GUEST], "host": [HOST]},
            "component_parameters": {"common": {"probe_0": {"seconds": seconds}}}}
    return dsl, conf
