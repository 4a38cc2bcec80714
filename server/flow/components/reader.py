"""Reader: the job's input table for this party (`table: {name, namespace}`) as the output data."""
from __future__ import annotations

from .base import Component, ComponentContext, ComponentError


class Reader(Component):
    module = "Reader"
    roles = ("guest", "host", "local")
    defaults = {"table": None}

    def run(self, ctx: ComponentContext) -> None:
        table = self.params.get("table")
        if not isinstance(table, dict) or not table.get("name") or not table.get("namespace"):
            raise ComponentError(f"Reader needs table: {{name, namespace}} for {ctx.role} {ctx.party_id}")
        source = ctx.read_table(str(table["namespace"]), str(table["name"]))
        ctx.log(f"reading {source.namespace}.{source.name}: {source.count} rows")
        out = ctx.write_table(source.rows(), source.schema)
        ctx.summary({"count": out.count, "table": {"namespace": source.namespace, "name": source.name}})
