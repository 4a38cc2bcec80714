"""Plumbing between a node and its helper processes (Python workers, the spawner).

Messages are framed pickles: a 4-byte big-endian length, then the pickle.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import struct

HEADER = struct.Struct(">I")


def frame(obj) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def unframe(body: bytes):
    return pickle.loads(body)


def die_with_parent() -> None:
    """Make the kernel kill this process when its parent dies (Linux PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before we asked
        os._exit(1)
