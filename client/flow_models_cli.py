"""`taskhub flow model|tag VERB ...` and `taskhub flow job dsl`: FATE's flow CLI verbs for models and
tags, with its flags (-c conf, -j job id, -t tag name, --model-id, --model-version, --cpn-list, ...).
Appended to client/flow_cli.py's COMMANDS."""
from __future__ import annotations

import json
import os


def _conf(p, required=True) -> None:
    p.add_argument("-c", "--conf-path", dest="conf", required=required, help="conf (JSON file)")


def _model(p) -> None:
    p.add_argument("--model-id", dest="model_id", required=True, help="model id")
    p.add_argument("--model-version", dest="model_version", required=True, help="model version")


def _job(p, required=True) -> None:
    p.add_argument("-j", "--job-id", dest="job_id", required=required, help="job id (the model's version)")


def _tag(p) -> None:
    p.add_argument("-t", "--tag-name", dest="tag_name", required=True, help="tag name")


def _written(result: dict, output_path: str | None, name: str) -> dict:
    """FATE's CLI writes predict DSLs/confs to -o when given; the answer says where."""
    if output_path and result.get("retcode") == 0:
        os.makedirs(output_path, exist_ok=True)
        path = os.path.join(output_path, name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result["data"], f, indent=4)
        result = {**result, "retmsg": f"written to {path}", "file": path}
    return result


def _cpns(a) -> list[str] | None:
    return [c.strip() for c in a.cpn_list.split(",") if c.strip()] if a.cpn_list else None


COMMANDS = [
    ("model", "load", "record that a deployed model version is loaded (conf or -j)",
     lambda p: (_conf(p, required=False), _job(p, required=False)),
     lambda c, a: c.model.load(a.conf, a.job_id)),
    ("model", "bind", "bind a model version to a service id (conf names service_id)",
     lambda p: (_conf(p), _job(p, required=False)), lambda c, a: c.model.bind(a.conf, a.job_id)),
    ("model", "import", "import an exported archive (conf: model_id, model_version, role, party_id, file)",
     lambda p: (_conf(p), p.add_argument("--from-database", action="store_true",
                                          help="restore from the server's model directory instead")),
     lambda c, a: c.model.import_model(a.conf, a.from_database)),
    ("model", "export", "export one party's model archive to conf's output_path",
     lambda p: (_conf(p), p.add_argument("--to-database", action="store_true",
                                          help="store in the server's model directory instead")),
     lambda c, a: c.model.export_model(a.conf, a.to_database)),
    ("model", "migrate", "copy a model version to new party ids", _conf, lambda c, a: c.model.migrate(a.conf)),
    ("model", "tag-list", "the tags of the model a job trained", _job, lambda c, a: c.model.tag_list(a.job_id)),
    ("model", "tag-model", "tag (or untag) the model a job trained",
     lambda p: (_job(p), _tag(p), p.add_argument("--remove", action="store_true", help="take the tag off")),
     lambda c, a: c.model.tag_model(a.job_id, a.tag_name, a.remove)),
    ("model", "deploy", "make a model version with a predict DSL",
     lambda p: (_model(p), p.add_argument("--cpn-list", dest="cpn_list", help="components, comma-separated"),
                p.add_argument("--dsl-path", dest="dsl_path", help="a predict DSL to use as given (JSON file)")),
     lambda c, a: c.model.deploy(a.model_id, a.model_version, _cpns(a), a.dsl_path)),
    ("model", "get-predict-dsl", "a deployed model version's predict DSL",
     lambda p: (_model(p), p.add_argument("-o", "--output-path", dest="output_path", help="write it here")),
     lambda c, a: _written(c.model.get_predict_dsl(a.model_id, a.model_version), a.output_path,
                           "predict_dsl.json")),
    ("model", "get-predict-conf", "a predict conf template for a deployed model version",
     lambda p: (_model(p), p.add_argument("-o", "--output-path", dest="output_path", help="write it here")),
     lambda c, a: _written(c.model.get_predict_conf(a.model_id, a.model_version), a.output_path,
                           "predict_conf.json")),
    ("model", "get-model-info", "model records (one per party)",
     lambda p: (p.add_argument("--model-id", dest="model_id"), p.add_argument("--model-version", dest="model_version"),
                p.add_argument("-r", "--role"), p.add_argument("-p", "--party-id", dest="party_id", type=int)),
     lambda c, a: c.model.get_model_info(a.model_id, a.model_version, a.role, a.party_id)),
    ("tag", "create", "create a tag",
     lambda p: (_tag(p), p.add_argument("-d", "--tag-desc", dest="tag_desc", help="description")),
     lambda c, a: c.tag.create(a.tag_name, a.tag_desc)),
    ("tag", "update", "rename a tag or change its description",
     lambda p: (_tag(p), p.add_argument("--new-tag-name", dest="new_tag_name"),
                p.add_argument("--new-tag-desc", dest="new_tag_desc")),
     lambda c, a: c.tag.update(a.tag_name, a.new_tag_name, a.new_tag_desc)),
    ("tag", "list", "tags", lambda p: p.add_argument("-l", "--limit", type=int, default=10),
     lambda c, a: c.tag.list(a.limit)),
    ("tag", "query", "tags whose name contains -t (or, --with-model, the models tagged -t)",
     lambda p: (_tag(p), p.add_argument("--with-model", action="store_true")),
     lambda c, a: c.tag.query(a.tag_name, a.with_model)),
    ("tag", "delete", "delete a tag", _tag, lambda c, a: c.tag.delete(a.tag_name)),
    ("job", "dsl", "generate a predict DSL from a train DSL",
     lambda p: (p.add_argument("--train-dsl-path", dest="train_dsl", required=True, help="train DSL (JSON file)"),
                p.add_argument("--cpn-list", dest="cpn_list", help="components, comma-separated"),
                p.add_argument("--cpn-path", dest="cpn_path", help="a file listing the components"),
                p.add_argument("-o", "--output-path", dest="output_path", help="write it here")),
     lambda c, a: _written(c.job.generate_dsl(a.train_dsl, a.cpn_path, _cpns(a)), a.output_path,
                           "predict_dsl.json")),
]
