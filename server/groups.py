"""Task groups (seed 003): templates of groups of commands, and instances deployed from them.

A template is kept exactly as it was submitted (its JSON text), so a query returns it as
stored. Deploying one creates an instance (a UUID) whose tasks are ordinary command tasks,
`sh -c COMMAND`, that TaskService traces, waits on and lists like any other. The tasks of
one group of an instance share a COLOCATE annotation, so the engine runs them on one node.

Templates and instances are few and small: they live in memory, loaded at start, and every
change is written through the store's single writer. Checks and changes happen on the event
loop without an await between them, so two concurrent creates of one name cannot both win.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from . import errors
from .engine import COLOCATE, Engine
from .model import ANY_NAMESPACE, DEFAULT_NAMESPACE, Status, TaskSpec, TaskType, now_ms

MAX_TEMPLATE_BYTES = 1 << 20
INSTANCE_ANNOTATION = "taskhub.group_instance"
TEMPLATE_ANNOTATION = "taskhub.group_template"


@dataclass
class Template:
    name: str
    doc: dict                 # the parsed JSON
    json: str                 # the JSON text as submitted
    create_time_ms: int

    @property
    def groups(self) -> list[list[tuple[str, str]]]:
        """[(task name, command), ...] per group."""
        return [[(t["name"], t["config"]["command"]) for t in g["tasks"]] for g in self.doc["task_groups"]]


@dataclass
class Instance:
    id: str
    template: str
    namespace: str
    task_ids: list[int] = field(default_factory=list)
    create_time_ms: int = 0


RUNNING, COMPLETED, FAILED = "running", "completed", "failed"


def parse_template(text: str) -> dict:
    """The template document, checked; InvalidArgument says what is wrong and where."""
    if len(text.encode()) > MAX_TEMPLATE_BYTES:
        raise errors.InvalidArgument(f"a template is at most {MAX_TEMPLATE_BYTES} bytes of JSON")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise errors.InvalidArgument(f"the template is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument("a template is a JSON object with \"name\" and \"task_groups\"")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise errors.InvalidArgument("template \"name\" must be a non-empty string of at most 200 characters")
    groups = doc.get("task_groups")
    if not isinstance(groups, list) or not groups:
        raise errors.InvalidArgument("template \"task_groups\" must be a non-empty list")
    for gi, g in enumerate(groups):
        tasks = g.get("tasks") if isinstance(g, dict) else None
        if not isinstance(tasks, list) or not tasks:
            raise errors.InvalidArgument(f"task_groups[{gi}].tasks must be a non-empty list")
        for ti, t in enumerate(tasks):
            where = f"task_groups[{gi}].tasks[{ti}]"
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
                raise errors.InvalidArgument(f"{where}.name must be a non-empty string")
            config = t.get("config")
            if not isinstance(config, dict) or not isinstance(config.get("command"), str) or not config["command"].strip():
                raise errors.InvalidArgument(f"{where}.config.command must be a non-empty string")
    return doc


class TaskGroups:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.store = engine.store
        self.templates: dict[str, Template] = {}
        self.instances: dict[str, Instance] = {}

    def load(self) -> None:
        self.templates.clear()
        self.instances.clear()
        for r in self.store.group_templates():
            self.templates[r["name"]] = Template(r["name"], json.loads(r["json"]), r["json"], r["create_time_ms"])
        for r in self.store.group_instances():
            self.instances[r["id"]] = Instance(r["id"], r["template"], r["namespace"], json.loads(r["task_ids"]),
                                               r["create_time_ms"])

    async def reload(self) -> None:
        """This server became the scheduler: what the previous one made is in the store."""
        self.load()

    # ------------------------------------------------------------------ templates
    async def create_template(self, text: str) -> Template:
        doc = parse_template(text)
        name = doc["name"]
        if name in self.templates:
            raise errors.AlreadyExists(f"a task group template named {name!r} already exists")
        tpl = self.templates[name] = Template(name, doc, text, now_ms())  # reserved before the await
        try:
            async with self.store.batch() as b:
                b.put_group_template(name, text, tpl.create_time_ms)
        except BaseException:
            self.templates.pop(name, None)
            raise
        return tpl

    def get_template(self, name: str) -> Template:
        tpl = self.templates.get(name)
        if tpl is None:
            raise errors.NotFound(f"no task group template named {name!r}")
        return tpl

    def list_templates(self) -> list[Template]:
        return [self.templates[n] for n in sorted(self.templates)]

    async def delete_template(self, name: str) -> None:
        self.get_template(name)
        del self.templates[name]
        async with self.store.batch() as b:
            b.delete_group_template(name)

    # ------------------------------------------------------------------ instances
    async def deploy(self, name: str, namespace: str = "") -> Instance:
        tpl = self.get_template(name)
        inst = Instance(str(uuid.uuid4()), name, namespace or DEFAULT_NAMESPACE, create_time_ms=now_ms())
        specs = []
        for gi, group in enumerate(tpl.groups):
            for task_name, command in group:
                specs.append(TaskSpec(
                    type=TaskType.COMMAND, namespace=inst.namespace, name=task_name, argv=["sh", "-c", command],
                    annotations={COLOCATE: f"{inst.id}/{gi}", INSTANCE_ANNOTATION: inst.id,
                                 TEMPLATE_ANNOTATION: name}))
        tasks = await self.engine.create(specs)
        inst.task_ids = [t.id for t in tasks]
        self.instances[inst.id] = inst
        async with self.store.batch() as b:
            b.put_group_instance(inst.id, inst.template, inst.namespace, inst.task_ids, inst.create_time_ms)
        return inst

    def get_instance(self, instance_id: str) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise errors.NotFound(f"no task group instance with id {instance_id!r}")
        return inst

    def list_instances(self, template: str = "") -> list[Instance]:
        found = [i for i in self.instances.values() if not template or i.template == template]
        return sorted(found, key=lambda i: i.create_time_ms, reverse=True)

    def status(self, inst: Instance) -> str:
        """failed once a task failed or was cancelled (or is gone); completed when all succeeded."""
        done = 0
        for task_id in inst.task_ids:
            try:
                task = self.engine.get(ANY_NAMESPACE, task_id)
            except errors.NotFound:
                return FAILED
            if task.status in (Status.FAILED, Status.CANCELLED):
                return FAILED
            done += task.status == Status.SUCCESS
        return COMPLETED if done == len(inst.task_ids) else RUNNING

    async def stop(self, instance_id: str) -> tuple[Instance, list[int]]:
        """Cancel every unfinished task of the instance, then remove the instance."""
        inst = self.get_instance(instance_id)
        del self.instances[instance_id]  # a concurrent stop now gets NOT_FOUND
        cancelled = []
        for task_id in inst.task_ids:
            try:
                ok, _ = self.engine.cancel(ANY_NAMESPACE, task_id, f"task group instance {inst.id} stopped")
            except errors.NotFound:
                continue
            if ok:
                cancelled.append(task_id)
        async with self.store.batch() as b:
            b.delete_group_instance(instance_id)
        return inst, cancelled
