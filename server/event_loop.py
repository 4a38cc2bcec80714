"""The event loop a taskhub process runs on: uvloop where it is installed (a default install has it
on Linux and macOS), else asyncio's own.

Why uvloop: the server's loop carries a task's whole path between the gRPC call and the worker's
pipe, and it turns faster on uvloop. On a 2-core machine the loop spent 4-5 % less CPU per no-op
ExecuteTask round trip, and the round trip took 2-7 % less time (README, "Cut for one task").
Choose with `--loop`.
"""
from __future__ import annotations

import asyncio
from typing import Any, Coroutine

LOOPS = ("auto", "uvloop", "asyncio")


def run(main: Coroutine[Any, Any, Any], loop: str = "auto") -> Any:
    """`asyncio.run(main)` on the loop asked for (one of LOOPS; "auto": uvloop if installed)."""
    uvloop = None
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
    if uvloop is None:
        if loop == "uvloop":
            main.close()
            raise SystemExit("taskhub: --loop uvloop: uvloop is not installed here (pip install uvloop),"
                             " or pass --loop asyncio")
        return asyncio.run(main)
    return uvloop.run(main)


def name() -> str:
    """The running loop's kind, for `taskhub serve`'s first line and the tests."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
