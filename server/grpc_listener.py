"""Which listener gRPC gives the server's connections: chosen on import of this module, which
server/cli.py imports first, because grpcio reads GRPC_EXPERIMENTS once, when it is imported.

grpcio 1.85's default listener is its EventEngine one (the experiment event_engine_listener),
which polls the connections on threads of its own (gRPC proposal L82); the one before it polls
them on the thread that waits on the completion queue, one hand-off fewer per call. On this
2-core machine it answers sooner.
A bare grpc.aio unary call from another process, p50 over 16 alternating rounds of 400 calls on
2 cores: 0.647 ms with the default listener, 0.568 ms with the older one. A no-op task's
ExecuteTask round trip: 4 % less (4 runs of 30 alternating rounds, auth off and on, two servers
side by side); batched and one-call-per-task throughput did not move (README: The hot path).
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


def choose() -> bool:
    """Import grpc with the older listener, unless GRPC_EXPERIMENTS is set (the operator's choice
    stands), grpc is already imported, or grpcio is not a measured version. The variable is taken
    out again at once: tasks and their workers (which inherit the environment) get grpc as it is.
    True if the older listener was chosen."""
    if "GRPC_EXPERIMENTS" in os.environ or "grpc" in sys.modules or not MEASURED[0] <= _version() < MEASURED[1]:
        return False
    os.environ["GRPC_EXPERIMENTS"] = OLDER_LISTENER
    try:
        import grpc  # noqa: F401  (it reads the variable now)
    finally:
        del os.environ["GRPC_EXPERIMENTS"]
    return True


def describe() -> str:
    """For the server's start line."""
    if chosen:
        return f"gRPC's older listener: GRPC_EXPERIMENTS={OLDER_LISTENER}"
    if "GRPC_EXPERIMENTS" in os.environ:
        return f"GRPC_EXPERIMENTS={os.environ['GRPC_EXPERIMENTS']} as set"
    return "gRPC's default listener"


chosen = choose()
