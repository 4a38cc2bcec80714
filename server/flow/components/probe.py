"""Probe: a small component for trying the job plane: passes its input data through, records a
metric and a model, and can take its time or fail on request."""
from __future__ import annotations

import time

from .base import Component, ComponentContext, ComponentError


class Probe(Component):
    module = "Probe"
    roles = ("guest", "host", "arbiter", "local")
    defaults = {"seconds": 0, "fail": False, "message": ""}

    def run(self, ctx: ComponentContext) -> None:
        deadline = time.monotonic() + float(self.params["seconds"])
        step = 0
        while time.monotonic() < deadline:
            ctx.check_cancelled()
            ctx.metric("probe", "ticks", [(step, round(time.monotonic(), 3))], {"metric_type": "TICK"})
            step += 1
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if self.params["fail"]:
            raise ComponentError(f"Probe failed on request: {self.params['message'] or 'fail=true'}")
        rows = 0
        for table in ctx.input_tables("data"):
            out = ctx.write_table(table.rows(), table.schema)
            rows += out.count
        ctx.metric("probe", "rows", [(0, rows)], {"metric_type": "COUNT"})
        ctx.save_model({"rows": rows, "role": ctx.role}, {"module": "Probe"})
        ctx.summary({"rows": rows, "message": self.params["message"]})
