"""Secure aggregation for Delta tasks: pairwise masks, so the coordinator learns only the sum.

Each client makes an X25519 key pair; the coordinator relays the public keys (it never sees a
private one). Clients i and j agree on the same X25519 secret and derive, with HKDF-SHA256 bound
to both public keys, a pair key; one mask per uploaded value is the ChaCha20 keystream under a key
derived from the pair key and the value's label. i adds the mask, j subtracts it, so the masks
cancel in the sum over the clients and each single upload looks random. Values go in fixed point
(the strategy's `precision` decimal digits) as integers mod 2^64, the arithmetic the masks need.
The primitives are the `cryptography` package's: X25519 rejects low-order peer keys (an all-zero
shared secret), which a hand-made group check cannot promise. The model is Delta's: an honest but
curious coordinator that relays keys faithfully; no client may drop out mid-round.
"""
from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LIMIT = 2 ** 62  # largest fixed-point magnitude per value (sums of a few clients stay below 2^63)
_PAIR_INFO = b"taskhub delta secagg v2 pair"
_MASK_INFO = b"taskhub delta secagg v2 mask "


class SecureAggregationError(ValueError):
    pass


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def keypair() -> tuple[X25519PrivateKey, str]:
    """(private key, public key as hex: what travels to the peers through the coordinator)."""
    private = X25519PrivateKey.generate()
    return private, _raw(private.public_key()).hex()


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def shared_secret(private: X25519PrivateKey, peer_public: str) -> bytes:
    """The pair key this client shares with the holder of `peer_public` (hex)."""
    try:
        peer = bytes.fromhex(peer_public) if isinstance(peer_public, str) else b""
        agreed = private.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError:   # not 32 bytes, or a low-order point (all-zero secret)
        raise SecureAggregationError("a peer's public key is not a valid X25519 key") from None
    mine = _raw(private.public_key())
    return _hkdf(agreed, _PAIR_INFO + min(mine, peer) + max(mine, peer))


def _mask(secret: bytes, label: str, size: int) -> np.ndarray:
    key = _hkdf(secret, _MASK_INFO + label.encode())
    stream = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor().update(b"\0" * (8 * size))
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
