"""Probe: a small component for trying the job plane: passes its input data through, records a
metric and a model, and can take its time or fail on request."""
from __future__ import annotations

import time

from .base import Component, ComponentContext, ComponentError


class Probe(Component):
    module = "Probe"
    roles = ("guest", "host", "arbiter", "local")
    defaults = {"seconds": 0, "fail": False, "message": "", "federation_messages": 0, "federation_bytes": 0}

    def run(self, ctx: ComponentContext) -> None:
        deadline = time.monotonic() + float(self.params["seconds"])
        step = 0
        while time.monotonic() < deadline:
            ctx.check_cancelled()
            ctx.metric("probe", "ticks", [(step, round(time.monotonic(), 3))], {"metric_type": "TICK"})
            step += 1
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if self.params["federation_messages"]:
            self.exchange(ctx, int(self.params["federation_messages"]), int(self.params["federation_bytes"]))
        if self.params["fail"]:
            raise ComponentError(f"Probe failed on request: {self.params['message'] or 'fail=true'}")
        rows = 0
        for table in ctx.input_tables("data"):
            out = ctx.write_table(table.rows(), table.schema)
            rows += out.count
        ctx.metric("probe", "rows", [(0, rows)], {"metric_type": "COUNT"})
        ctx.save_model({"rows": rows, "role": ctx.role}, {"module": "Probe"})
        ctx.summary({"rows": rows, "message": self.params["message"]})

    @staticmethod
    def exchange(ctx: ComponentContext, count: int, size: int) -> None:
        """The guest sends `count` objects of `size` bytes to the host, which times receiving them
        (the federation channel's messages/s and MB/s: bench/fate_flow.py)."""
        if ctx.role == "guest":
            payload = b"x" * size
            for i in range(count):
                ctx.federation.remote(payload, "probe_exchange", str(i), "host", -1)
        elif ctx.role == "host":
            started = time.monotonic()
            received = sum(len(ctx.federation.get("probe_exchange", str(i), "guest", 0)[0]) for i in range(count))
            seconds = time.monotonic() - started
            ctx.summary({"federation": {"messages": count, "bytes": received, "seconds": seconds,
                                        "messages_per_s": count / seconds, "mb_per_s": received / seconds / 1e6}})
