"""A FATE job's component graph: which components may start now, and the taskhub task that runs
one component for one (role, party) — a PYTHON task calling server/flow/runtime.py in a worker."""
from __future__ import annotations

import json
from typing import Callable

from ..engine import DEDICATED_WORKER, OBSERVER, Engine
from ..model import TaskSpec, TaskType
from . import dsl
from .model import TASK_DONE, FlowJob, FlowTask, TaskStatus
from .registry import Registry
from .store import FlowStore

T = TaskStatus
OBSERVER_NAME = "flow"
JOB_ANNOTATION = "fate.job_id"
PARTY_LABEL = "fate.party"
RUNTIME = "server.flow.runtime:run_component"

# (model_id, model_version, component, role, party_id) -> that component's model, or None
ModelSource = Callable[[str, str, str, str, int], "dict | None"]


class JobGraph:
    def __init__(self, engine: Engine, fstore: FlowStore, registry: Registry, model_source: ModelSource | None = None):
        self.engine = engine
        self.fstore = fstore
        self.registry = registry
        self.model_source = model_source

    def component_status(self, job: FlowJob, component: str) -> TaskStatus:
        """The worst status of the component's tasks; SUCCESS when all succeeded or passed."""
        statuses = [t.status for (c, _, _), t in job.tasks.items() if c == component]
        for st in (T.FAILED, T.TIMEOUT, T.CANCELED, T.RUNNING, T.WAITING):
            if st in statuses:
                return st
        return T.SUCCESS if T.SUCCESS in statuses else T.PASS

    def next_tasks(self, job: FlowJob, plan: dsl.Plan, local: Callable[[int], bool] | None = None
                   ) -> tuple[bool, list[tuple[FlowTask, TaskSpec | None]]]:
        """(every component done, [(task, spec)] of the tasks that may start now). With `local`
        (party id -> whether it runs on this server), another party's task comes with no spec:
        its own server makes it (and FlowTask.node says which party's server has it)."""
        done = {c.name for c in plan.components if self.component_status(job, c.name) in TASK_DONE}
        if len(done) == len(plan.components):
            return True, []
        ready = []
        for c in plan.components:
            if c.name in done or not all(up in done for up in c.upstream):
                continue
            for role, party in plan.parties:
                t = job.tasks[(c.name, role, party)]
                if t.status == T.WAITING and not t.taskhub_task_id and not t.node:
                    ready.append((t, self.spec(job, plan, c, t) if local is None or local(party) else None))
        return False, ready

    def spec(self, job: FlowJob, plan: dsl.Plan, c: dsl.Component, t: FlowTask) -> TaskSpec:
        inputs = {}
        for key, refs in c.data_inputs.items():
            tables = []
            for up, output in refs:
                for info in self.fstore.output_tables(job.job_id, up, t.role, t.party_id):
                    if info["output_name"] == output:
                        tables.append({"namespace": info["namespace"], "name": info["name"], "component": up})
            inputs[key] = tables
        models = {key: [self._model_ref(job, up, output, t) for up, output in refs]
                  for key, refs in c.model_inputs.items()}
        models = {key: [m for m in refs if m is not None] for key, refs in models.items()}
        entry = self.registry.get(c.module)
        job_parameters = plan.job_parameters(t.role, t.party_id)
        job_parameters.setdefault("job_type", plan.job_type)  # a predict conf may leave it implied
        spec_input = {
            "job_id": job.job_id, "component": c.name, "module": c.module, "component_class": entry.path,
            "role": t.role, "party_id": t.party_id, "roles": plan.roles,
            "params": plan.params(c.name, t.role, t.party_id),
            "job_parameters": job_parameters, "inputs": inputs, "models": models,
        }
        selector = {PARTY_LABEL: str(t.party_id)} if self._party_has_nodes(t.party_id) else {}
        return TaskSpec(
            type=TaskType.PYTHON, namespace=job.namespace, name=f"{job.job_id}_{c.name}_{t.role}_{t.party_id}",
            callable=RUNTIME, input_json=json.dumps(spec_input), max_retries=plan.auto_retries,
            retry_backoff_seconds=plan.auto_retry_delay, node_selector=selector,
            # The parties of a job wait on each other (federation): none may queue behind a busy worker.
            annotations={OBSERVER: OBSERVER_NAME, DEDICATED_WORKER: "1", JOB_ANNOTATION: job.job_id, "fate.component": c.name,
                         "fate.role": t.role, "fate.party_id": str(t.party_id)})

    def _model_ref(self, job: FlowJob, up: str, output: str, t: FlowTask) -> dict | None:
        """A model input: another component of this job (read by the task through GetComponentOutput),
        or `pipeline.<cpn>` of a predict job's model, handed over whole (None when the model has no
        model of that component for this party, e.g. an arbiter)."""
        if not up.startswith("pipeline."):
            return {"job_id": job.job_id, "component": up, "output": output}
        if self.model_source is None:
            return None
        return self.model_source(job.model_id, job.model_version, up[len("pipeline."):], t.role, t.party_id)

    def _party_has_nodes(self, party_id: int) -> bool:
        """A party runs only on nodes labelled fate.party=<id> once any node carries that label."""
        want = str(party_id)
        return any(n.labels.get(PARTY_LABEL) == want for n in self.engine.nodes.values())
