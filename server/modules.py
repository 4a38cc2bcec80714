"""Describing a Python task module (DescribeModule) without importing it into the server.

The server checks the module against the allowed prefixes, then runs
`python -m server.modules MODULE` in a short-lived subprocess with the same sys.path the
Python workers get; that child imports the module, reads its functions' signatures and
prints one JSON object. Untrusted module code never runs inside the server process.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import sys

from . import errors
from .model import module_allowed
from .node.pool import EXAMPLES_DIR

_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
TIMEOUT = 20.0
MAX_OUTPUT = 4 << 20
NOT_FOUND_EXIT = 3
IMPORT_FAILED_EXIT = 4


class ModuleDescriber:
    def __init__(self, allowed_prefixes: list[str], task_paths: list[str]):
        self.allowed = allowed_prefixes
        self.task_paths = task_paths

    async def describe(self, module: str) -> dict:
        if not _MODULE.match(module or ""):
            raise errors.InvalidArgument(f"module {module!r} is not a dotted Python module name")
        if not module_allowed(module, self.allowed):
            raise errors.PermissionDenied(
                f"module {module!r} is not allowed; the server allows {', '.join(self.allowed) or 'no modules'}"
                " (start it with --allow-module PREFIX)")
        env = dict(os.environ)
        paths = [EXAMPLES_DIR, os.getcwd(), *self.task_paths]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.modules", module, cwd=os.getcwd(), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise errors.FailedPrecondition(f"importing module {module!r} took longer than {TIMEOUT:.0f}s") from None
        except asyncio.CancelledError:
            proc.kill()
            raise
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        if proc.returncode == NOT_FOUND_EXIT:
            raise errors.NotFound(f"module {module!r} cannot be found: {reason[0]}")
        if proc.returncode != 0 or len(out) > MAX_OUTPUT:
            raise errors.FailedPrecondition(f"module {module!r} cannot be imported: {reason[0] or 'exit ' + str(proc.returncode)}")
        return json.loads(out)


# -- the child side --------------------------------------------------------------
def _default_json(value) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _annotation(a) -> str:
    if a is inspect.Parameter.empty:
        return ""
    return a if isinstance(a, str) else getattr(a, "__name__", None) or repr(a)


def describe_loaded(mod) -> dict:
    entries = []
    for name, obj in vars(mod).items():
        if name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != mod.__name__:
            continue
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            continue
        params = [{
            "name": p.name, "kind": p.kind.name, "required": p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD),
            "default_json": "" if p.default is inspect.Parameter.empty else _default_json(p.default),
            "annotation": _annotation(p.annotation),
        } for p in sig.parameters.values() if p.name != "ctx"]
        entries.append({"name": name, "doc": inspect.getdoc(obj) or "", "parameters": params,
                        "_line": getattr(obj.__code__, "co_firstlineno", 0)})
    entries.sort(key=lambda e: e.pop("_line"))
    return {"module": mod.__name__, "doc": inspect.getdoc(mod) or "", "entries": entries}


def main(argv: list[str]) -> int:
    import importlib
    module = argv[0]
    sys.stdout, real_stdout = sys.stderr, sys.stdout  # a chatty import must not corrupt the JSON
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return NOT_FOUND_EXIT if e.name and module.startswith(e.name) else IMPORT_FAILED_EXIT
    except BaseException as e:  # noqa: BLE001 - any failure of foreign code is reported, not raised
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return IMPORT_FAILED_EXIT
    real_stdout.write(json.dumps(describe_loaded(mod)))
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
