"""How the server imports grpc: on import of this module, which server/cli.py imports first,
because grpcio reads GRPC_EXPERIMENTS and GRPC_ENABLE_FORK_SUPPORT once, when it is imported.
Both variables are taken out again at once: tasks and their workers, which inherit the
environment, get grpc as it is.

The listener. grpcio 1.85's default listener is its EventEngine one (the experiment
event_engine_listener), which polls the connections on threads of its own (gRPC proposal L82);
the one before it polls them on the thread that waits on the completion queue, one hand-off
fewer per call. On this 2-core machine it answers sooner.
A bare grpc.aio unary call from another process, p50 over 16 alternating rounds of 400 calls on
2 cores: 0.647 ms with the default listener, 0.568 ms with the older one. A no-op task's
ExecuteTask round trip: 4 % less (4 runs of 30 alternating rounds, auth off and on, two servers
side by side); batched and one-call-per-task throughput did not move (README: The hot path).

Fork support off. The server forks only to exec (its Python workers, through the event loop's
subprocess spawn), and gRPC's fork handlers run in every such child between fork and exec. In
grpcio 1.85 they are on by default, and a child can hang in them: a fresh-clone CI run hung with
the server's event loop blocked in uv_spawn, waiting on a forked child stuck in gRPC's post-fork
handler (threads of gRPC's EventEngine started in the child, one of them waiting on a futex).
GRPC_ENABLE_FORK_SUPPORT=0 is gRPC's own setting for a process that execs after every fork.
"""
from __future__ import annotations

import os
import sys
from importlib import metadata

OLDER_LISTENER = "-event_engine_listener"
# The grpcio versions this was measured on (pyproject.toml allows >=1.60,<2); widen it after
# measuring another (bench/stages.py, bench/peer.py). A version without the experiment would log
# "Unknown experiment" at every start.
MEASURED = ((1, 85), (1, 86))


def _version() -> tuple[int, int]:
    try:
        major, minor = metadata.version("grpcio").split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return 0, 0


def _measured() -> bool:
    return MEASURED[0] <= _version() < MEASURED[1]


def set_up() -> dict[str, str]:
    """Import grpc with the variables it should read; returns those set here. The older listener
    only on a measured grpcio and unless GRPC_EXPERIMENTS is set; fork support off unless
    GRPC_ENABLE_FORK_SUPPORT is set (an operator's own setting stands). Nothing if grpc is
    already imported."""
    if "grpc" in sys.modules:
        return {}
    chosen = {}
    if "GRPC_EXPERIMENTS" not in os.environ and _measured():
        chosen["GRPC_EXPERIMENTS"] = OLDER_LISTENER
    if "GRPC_ENABLE_FORK_SUPPORT" not in os.environ:
        chosen["GRPC_ENABLE_FORK_SUPPORT"] = "0"
    os.environ.update(chosen)
    try:
        import grpc  # noqa: F401  (it reads the variables now)
    finally:
        for name in chosen:
            del os.environ[name]
    return chosen


def describe() -> str:
    """The listener, for the server's start line."""
    if "GRPC_EXPERIMENTS" in chosen:
        return f"gRPC's older listener: GRPC_EXPERIMENTS={OLDER_LISTENER}"
    if "GRPC_EXPERIMENTS" in os.environ:
        return f"GRPC_EXPERIMENTS={os.environ['GRPC_EXPERIMENTS']} as set"
    return "gRPC's default listener"


chosen = set_up()
