"""Framing between a node and its Python workers: 4-byte length, then a pickle."""
from __future__ import annotations

import pickle
import struct

HEADER = struct.Struct(">I")


def frame(obj) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def unframe(body: bytes):
    return pickle.loads(body)
