"""Secure aggregation for Delta tasks: pairwise masks, so the coordinator learns only the sum.

Each client makes a Diffie-Hellman key pair; the coordinator relays the public keys (it never sees
a private one). Clients i and j derive the same secret, and from it one mask per uploaded value:
i adds it, j subtracts it, so the masks cancel in the sum over the clients and each single upload
looks random. Values go in fixed point (the strategy's `precision` decimal digits) as integers mod
2^64, the arithmetic the masks need. Group: integers modulo the Mersenne prime 2^2203 - 1, base 3,
256-bit private exponents (Python integers; no extra dependency). The model is Delta's: an honest
but curious coordinator that relays keys faithfully; no client may drop out mid-round.
"""
from __future__ import annotations

import hashlib
import secrets

import numpy as np

P = 2 ** 2203 - 1
G = 3
KEY_BYTES = (P.bit_length() + 7) // 8
LIMIT = 2 ** 62  # largest fixed-point magnitude per value (sums of a few clients stay below 2^63)


class SecureAggregationError(ValueError):
    pass


def keypair() -> tuple[int, int]:
    private = secrets.randbits(256) | (1 << 255)
    return private, pow(G, private, P)


def shared_secret(private: int, peer_public: int) -> bytes:
    if not isinstance(peer_public, int) or not 1 < peer_public < P - 1:
        raise SecureAggregationError("a peer's public key is out of range")
    return pow(peer_public, private, P).to_bytes(KEY_BYTES, "big")


def _mask(secret: bytes, label: str, size: int) -> np.ndarray:
    stream = hashlib.shake_256(secret + label.encode()).digest(8 * size)
    return np.frombuffer(stream, dtype=np.uint64).copy()


class Masked:
    """One uploaded value in fixed point mod 2^64 (masked, or a sum of masked values)."""

    def __init__(self, kind: str, data: np.ndarray, meta):
        self.kind, self.data, self.meta = kind, data, meta

    def __add__(self, other: "Masked") -> "Masked":
        if not isinstance(other, Masked) or other.kind != self.kind or other.data.shape != self.data.shape:
            raise SecureAggregationError("clients uploaded values of different kinds or shapes")
        return Masked(self.kind, self.data + other.data, self.meta)

    def unmask(self, precision: int):
        values = self.data.view(np.int64).astype(np.float64) / 10 ** precision
        if self.kind == "series":
            import pandas as pd
            index, name = self.meta
            return pd.Series(values, index=index, name=name)
        if self.kind == "frame":
            import pandas as pd
            index, columns, shape = self.meta
            return pd.DataFrame(values.reshape(shape), index=index, columns=columns)
        if self.kind == "tensor":
            import torch
            return torch.from_numpy(values.reshape(self.meta))
        if self.kind == "array":
            return values.reshape(self.meta)
        return float(values[0])


def _as_array(value) -> tuple[str, np.ndarray, object]:
    import pandas as pd
    if isinstance(value, pd.Series):
        return "series", value.to_numpy(dtype=np.float64), (value.index, value.name)
    if isinstance(value, pd.DataFrame):
        return "frame", value.to_numpy(dtype=np.float64).ravel(), (value.index, value.columns, value.shape)
    if isinstance(value, np.ndarray):
        return "array", value.astype(np.float64).ravel(), value.shape
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return "scalar", np.array([value], dtype=np.float64), None
    if type(value).__module__.startswith("torch"):
        arr = value.detach().cpu().numpy()
        return "tensor", arr.astype(np.float64).ravel(), arr.shape
    raise SecureAggregationError(f"secure aggregation sums numbers, numpy arrays, pandas Series/DataFrames and "
                                 f"torch tensors; an upload holds a {type(value).__name__}")


def mask(value, me: int, secrets_by_peer: dict[int, bytes], label: str, precision: int) -> Masked:
    kind, arr, meta = _as_array(value)
    scaled = np.round(arr * 10 ** precision)
    if not np.all(np.isfinite(scaled)) or (scaled.size and np.abs(scaled).max() >= LIMIT):
        raise SecureAggregationError(f"upload {label}: values must be finite and below {LIMIT / 10 ** precision:g} "
                                     f"at precision {precision}")
    data = scaled.astype(np.int64).view(np.uint64)
    for peer, secret in secrets_by_peer.items():
        m = _mask(secret, label, data.size)
        data = data + m if me < peer else data - m  # uint64 arithmetic wraps: exactly mod 2^64
    return Masked(kind, data, meta)
