"""Paillier on vectors of fixed-point numbers, fast enough for hetero LR in Python.

Keys come from `phe` (python-paillier); decryption is phe's (CRT). The hot paths work on raw
ciphertexts with gmpy2, because phe's EncodedNumber picks a float exponent per value and then
spends a modular exponentiation re-aligning exponents at every addition:

* Numbers are fixed point, as FATE does with `floating_point_precision`: v -> round(v * 2**precision),
  negatives as n - |m|. The caller tracks the scale of each result (a product of two encoded
  numbers carries 2**(2*precision)).
* Encryption is g^m * r^n with g = n + 1, so g^m = 1 + m*n. The random factor r^n uses the
  Damgård-Jurik-Nielsen form h_s^a (h_s = h^n mod n^2 for a random square h, a random of
  key_length/2 bits), the "DJN" option of Intel's IPCL that FATE also ships: every ciphertext still
  gets fresh randomness, but h_s is fixed, so h_s^a comes from a precomputed table (fixed-base
  windows) in ~key_length/16 multiplications instead of a full exponentiation.
* Sum_i c_i^(e_i) (an encrypted dot product, X^T [[d]]) is one Pippenger bucket pass per column
  instead of one exponentiation per element.
"""
from __future__ import annotations

import secrets
from typing import Sequence

import gmpy2
import numpy as np
from phe import paillier

from server.flow.components.base import ComponentError

WINDOW = 8          # bits per fixed-base window for h_s^a


def keypair(key_length: int) -> tuple["PublicKey", "PrivateKey"]:
    pub, priv = paillier.generate_paillier_keypair(n_length=key_length)
    return PublicKey(pub.n), PrivateKey(priv)


def encode(values: np.ndarray | Sequence[float], precision: int) -> list[int]:
    """Fixed point: round(v * 2**precision) as Python ints (exact, any size)."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * float(2 ** precision))
    return [int(v) for v in scaled]


class PublicKey:
    """What the arbiter sends to guest and hosts: n only; everything else is derived on arrival."""

    def __init__(self, n: int):
        self.n = gmpy2.mpz(n)
        self.n2 = self.n * self.n
        self.max_int = self.n // 3
        self._table: list[list[gmpy2.mpz]] | None = None

    def __getstate__(self):
        return {"n": int(self.n)}

    def __setstate__(self, state):
        self.__init__(state["n"])

    # -- encryption ---------------------------------------------------------------------------
    def _fixed_base_table(self) -> list[list[gmpy2.mpz]]:
        if self._table is None:
            x = gmpy2.mpz(secrets.randbelow(int(self.n) - 2) + 2)
            h = (-x * x) % self.n
            base = gmpy2.powmod(h, self.n, self.n2)
            windows = (self.alpha_bits + WINDOW - 1) // WINDOW
            table = []
            for _ in range(windows):
                row = [gmpy2.mpz(1), base]
                for _ in range(2, 1 << WINDOW):
                    row.append(row[-1] * base % self.n2)
                table.append(row)
                base = row[-1] * base % self.n2          # base^(2^WINDOW) for the next window
            self._table = table
        return self._table

    @property
    def alpha_bits(self) -> int:
        return max(128, int(self.n).bit_length() // 2)

    def random_factor(self) -> gmpy2.mpz:
        """h_s^a for a fresh random a: the obfuscator of one ciphertext."""
        table = self._fixed_base_table()
        a = secrets.randbits(self.alpha_bits)
        acc = gmpy2.mpz(1)
        mask = (1 << WINDOW) - 1
        for row in table:
            digit = a & mask
            if digit:
                acc = acc * row[digit] % self.n2
            a >>= WINDOW
        return acc

    def _plain(self, m: int) -> gmpy2.mpz:
        if abs(m) >= self.max_int:
            raise ComponentError("a fixed-point value is too large for the Paillier key; use a longer "
                                 "encrypt_param.key_length or a lower floating_point_precision")
        return (1 + (m % self.n) * self.n) % self.n2

    def encrypt(self, ms: Sequence[int]) -> list[gmpy2.mpz]:
        return [self._plain(m) * self.random_factor() % self.n2 for m in ms]

    # -- homomorphic operations -----------------------------------------------------------------
    def add(self, a: Sequence[gmpy2.mpz], b: Sequence[gmpy2.mpz]) -> list[gmpy2.mpz]:
        return [x * y % self.n2 for x, y in zip(a, b)]

    def add_plain(self, cs: Sequence[gmpy2.mpz], ms: Sequence[int]) -> list[gmpy2.mpz]:
        return [c * self._plain(m) % self.n2 for c, m in zip(cs, ms)]

    def scale(self, cs: Sequence[gmpy2.mpz], ks: Sequence[int]) -> list[gmpy2.mpz]:
        """[[m_i * k_i]] = c_i^k_i, for plain integers k_i."""
        return [gmpy2.powmod(c, k % self.n, self.n2) for c, k in zip(cs, ks)]

    def sum(self, cs: Sequence[gmpy2.mpz]) -> gmpy2.mpz:
        acc = gmpy2.mpz(1)
        for c in cs:
            acc = acc * c % self.n2
        return acc

    def dot(self, cs: Sequence[gmpy2.mpz], columns: Sequence[Sequence[int]], window: int = 5) -> list[gmpy2.mpz]:
        """For each column e (one int per ciphertext): [[sum_i m_i * e_i]] = prod_i c_i^e_i."""
        n2 = self.n2
        inverses = None
        out = []
        for exps in columns:
            if inverses is None and any(e < 0 for e in exps):
                inverses = [gmpy2.invert(c, n2) for c in cs]
            pos = [(c, e) for c, e in zip(cs, exps) if e > 0]
            neg = [(inv, -e) for inv, e in zip(inverses or [], exps) if e < 0] if inverses else []
            out.append(self._multiexp(pos + neg, window))
        return out

    def _multiexp(self, pairs: list[tuple[gmpy2.mpz, int]], window: int) -> gmpy2.mpz:
        """Pippenger: prod c^e over the pairs, with shared squarings and one bucket pass per window."""
        n2 = self.n2
        if not pairs:
            return gmpy2.mpz(1)
        top = max(e for _, e in pairs).bit_length()
        mask = (1 << window) - 1
        acc = gmpy2.mpz(1)
        for shift in range(((top + window - 1) // window - 1) * window, -1, -window):
            for _ in range(window):
                acc = acc * acc % n2
            buckets = [None] * (1 << window)
            for c, e in pairs:
                d = (e >> shift) & mask
                if d:
                    b = buckets[d]
                    buckets[d] = c if b is None else b * c % n2
            running, total = gmpy2.mpz(1), gmpy2.mpz(1)   # total = prod_d bucket_d^d via running products
            for d in range(mask, 0, -1):
                if buckets[d] is not None:
                    running = running * buckets[d] % n2
                total = total * running % n2
            acc = acc * total % n2
        return acc


class PrivateKey:
    def __init__(self, priv: paillier.PaillierPrivateKey):
        self._priv = priv
        self.n = priv.public_key.n

    def decrypt(self, cs: Sequence[gmpy2.mpz]) -> list[int]:
        """Signed fixed-point integers (the caller divides by their scale)."""
        out = []
        for c in cs:
            m = self._priv.raw_decrypt(int(c))
            out.append(m - self.n if m > self.n // 2 else m)
        return out
