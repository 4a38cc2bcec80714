"""`taskhub flow NOUN VERB ...`: FATE Flow's CLI (seed 004) over gRPC.

Nouns and verbs are FATE's `flow` CLI's, with its flags: -j job id, -r role, -p party id,
-cpn component, -c conf, -d dsl, -o output path, -l limit, -s status, -t table name,
-n namespace. Prints FATE's answer as JSON; exits 0 when retcode is 0, else 1.
"""
from __future__ import annotations

import json

from .cli_support import DEFAULT_SERVER, SERVER_HELP, add_connection_flags, connect
from .fate_suite import add_suite_flags, run_and_print
from .flow import FlowClient
from .flow_models_cli import COMMANDS as FLOW_MODEL_COMMANDS


def _ids(p, *, job=False, role=False, party=False, cpn=False, status=False, required=False) -> None:
    if job:
        p.add_argument("-j", "--job-id", dest="job_id", required=required, help="job id")
    if role:
        p.add_argument("-r", "--role", required=required, help="role (guest, host, arbiter, local)")
    if party:
        p.add_argument("-p", "--party-id", dest="party_id", type=int, required=required, help="party id")
    if cpn:
        p.add_argument("-cpn", "--component-name", dest="component_name", required=required, help="component name")
    if status:
        p.add_argument("-s", "--status", help="status")


def _output(p, required=True) -> None:
    p.add_argument("-o", "--output-path", dest="output_path", required=required, help="output directory")


def _limit(p, default=10) -> None:
    p.add_argument("-l", "--limit", type=int, default=default, help=f"at most this many (default {default})")


# (noun, verb, help, how to add its arguments, how to call FlowClient with the parsed args)
COMMANDS = [
    ("job", "submit", "submit a job from a runtime conf and a DSL",
     lambda p: (p.add_argument("-c", "--conf-path", dest="conf", required=True, help="runtime conf (JSON file)"),
                p.add_argument("-d", "--dsl-path", dest="dsl", help="DSL (JSON file)")),
     lambda c, a: c.job.submit(a.conf, a.dsl)),
    ("job", "stop", "cancel a job", lambda p: _ids(p, job=True, required=True), lambda c, a: c.job.stop(a.job_id)),
    ("job", "rerun", "run an ended job again from its components that did not succeed",
     lambda p: (_ids(p, job=True, required=True), _ids(p, cpn=True), p.add_argument(
         "--force", action="store_true", help="rerun succeeded components too")),
     lambda c, a: c.job.rerun(a.job_id, a.component_name, a.force)),
    ("job", "clean", "delete an ended job's output tables and metrics",
     lambda p: (_ids(p, job=True, required=True), _ids(p, role=True, party=True, cpn=True)),
     lambda c, a: c.job.clean(a.job_id, a.role, a.party_id, a.component_name)),
    ("job", "query", "job rows (one per role and party)", lambda p: _ids(p, job=True, role=True, party=True, status=True),
     lambda c, a: c.job.query(a.job_id, a.role, a.party_id, status=a.status)),
    ("job", "list", "the newest jobs", _limit, lambda c, a: c.job.list(a.limit)),
    ("job", "config", "write a job's DSL and conf to a directory",
     lambda p: (_ids(p, job=True, role=True, party=True, required=True), _output(p)),
     lambda c, a: c.job.config(a.job_id, a.role, a.party_id, a.output_path)),
    ("job", "log", "write a job's logs to a directory", lambda p: (_ids(p, job=True, required=True), _output(p)),
     lambda c, a: c.job.log(a.job_id, a.output_path)),
    ("job", "view", "a job's output tables", lambda p: _ids(p, job=True, role=True, party=True, cpn=True, status=True),
     lambda c, a: c.job.view(a.job_id, a.role, a.party_id, a.status, a.component_name)),
    ("task", "list", "the newest tasks", _limit, lambda c, a: c.task.list(a.limit)),
    ("task", "query", "task rows", lambda p: _ids(p, job=True, role=True, party=True, cpn=True, status=True),
     lambda c, a: c.task.query(a.job_id, a.role, a.party_id, a.component_name, a.status)),
    ("component", "list", "a job's components", lambda p: _ids(p, job=True, required=True),
     lambda c, a: c.component.list(a.job_id)),
    ("component", "metric-delete", "delete metrics of a day or of a job",
     lambda p: (p.add_argument("--date", help="YYYYMMDD"), _ids(p, job=True)),
     lambda c, a: c.component.metric_delete(a.date, a.job_id)),
    ("component", "output-data", "write a component's output data to a directory",
     lambda p: (_ids(p, job=True, cpn=True, required=True), _ids(p, role=True, party=True), _output(p),
                _limit(p, -1)),
     lambda c, a: c.component.output_data(a.job_id, a.role, a.party_id, a.component_name, a.output_path, a.limit)),
]
# Verbs that take -j, -r, -p, -cpn and call component.<function>(job_id, role, party_id, component_name).
for _verb, _fn, _help in (("parameters", "parameters", "a component's parameters"),
                          ("metrics", "metrics", "a component's metric names"),
                          ("metric-all", "metric_all", "a component's metrics with data"),
                          ("output-model", "output_model", "a component's output model"),
                          ("output-data-table", "output_data_table", "a component's output table names"),
                          ("get-summary", "get_summary", "a component's summary")):
    COMMANDS.append(("component", _verb, _help,
                     lambda p: (_ids(p, job=True, cpn=True, required=True), _ids(p, role=True, party=True)),
                     lambda c, a, fn=_fn: getattr(c.component, fn)(a.job_id, a.role, a.party_id, a.component_name)))
COMMANDS += [
    ("data", "upload", "upload a CSV file as a table (conf names file, table_name, namespace, head, partition)",
     lambda p: (p.add_argument("-c", "--conf-path", dest="conf", required=True, help="upload conf (JSON file)"),
                p.add_argument("--drop", action="store_true", help="replace an existing table"),
                p.add_argument("--verbose", action="store_true")),
     lambda c, a: c.data.upload(a.conf, int(a.verbose), int(a.drop))),
    ("data", "download", "write a table to a CSV file on the server",
     lambda p: p.add_argument("-c", "--conf-path", dest="conf", required=True, help="download conf (JSON file)"),
     lambda c, a: c.data.download(a.conf)),
    ("data", "upload-history", "the newest uploads", lambda p: (_limit(p), _ids(p, job=True)),
     lambda c, a: c.data.upload_history(a.limit, a.job_id)),
    ("table", "info", "a table's description",
     lambda p: (p.add_argument("-t", "--table-name", dest="table_name", required=True),
                p.add_argument("-n", "--namespace", required=True)),
     lambda c, a: c.table.info(a.namespace, a.table_name)),
    ("table", "delete", "delete a table (by name, or a component's output tables)",
     lambda p: (p.add_argument("-t", "--table-name", dest="table_name"), p.add_argument("-n", "--namespace"),
                _ids(p, job=True, role=True, party=True, cpn=True)),
     lambda c, a: c.table.delete(a.namespace, a.table_name, a.job_id, a.role, a.party_id, a.component_name)),
    ("queue", "clean", "cancel every job waiting in the queue", lambda p: None, lambda c, a: c.queue.clean()),
]
COMMANDS += FLOW_MODEL_COMMANDS  # model and tag verbs, job dsl (client/flow_models_cli.py)


def cmd_flow(a) -> int:
    with FlowClient(a.server, taskhub=connect(a)) as client:
        result = a.call(client, a)
    print(json.dumps(result, indent=4, ensure_ascii=False))
    return 0 if result.get("retcode") == 0 else 1


def add_flow_parser(sub) -> None:
    f = sub.add_parser("flow", help="FATE Flow jobs, tasks, components, data, tables, queue, models and tags (seed 004)")
    f.add_argument("--server", default=DEFAULT_SERVER, help=SERVER_HELP)
    add_connection_flags(f)
    nouns = f.add_subparsers(dest="flow_noun", required=True, metavar="NOUN")
    verbs_of: dict = {}
    for noun, verb, help_, add_args, call in COMMANDS:
        if noun not in verbs_of:
            verbs_of[noun] = nouns.add_parser(noun, help=f"{noun} commands").add_subparsers(
                dest="flow_verb", required=True, metavar="VERB")
        p = verbs_of[noun].add_parser(verb, help=help_)
        add_args(p)
        p.set_defaults(fn=cmd_flow, call=call)
    suite = nouns.add_parser("suite", help="FATE test suites").add_subparsers(dest="flow_verb", required=True,
                                                                            metavar="VERB")
    p = suite.add_parser("run", help="run a FATE *_testsuite.json as fate_test suite does; prints a table of results")
    p.add_argument("suite", help="the test-suite file")
    add_suite_flags(p)
    p.set_defaults(fn=cmd_suite)


def cmd_suite(a) -> int:
    with FlowClient(a.server, taskhub=connect(a)) as client:
        return run_and_print(client, a)
