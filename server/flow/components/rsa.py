"""RSA keys with gmpy2 (Intersection's blind signatures, HomoLR's seed exchange). The private
operation uses the CRT (two half-size exponentiations), about 3x faster than x^d mod n."""
from __future__ import annotations

import secrets
from dataclasses import dataclass

import gmpy2

E = 65537


@dataclass(frozen=True)
class RSAKey:
    n: int
    e: int
    p: gmpy2.mpz
    q: gmpy2.mpz
    dp: gmpy2.mpz          # d mod (p - 1)
    dq: gmpy2.mpz          # d mod (q - 1)
    q_inv: gmpy2.mpz       # q^-1 mod p

    @property
    def public(self) -> dict:
        return {"n": self.n, "e": self.e}

    def private_op(self, x) -> gmpy2.mpz:
        """x^d mod n (sign, or decrypt)."""
        x = gmpy2.mpz(x)
        m1 = gmpy2.powmod(x % self.p, self.dp, self.p)
        m2 = gmpy2.powmod(x % self.q, self.dq, self.q)
        return m2 + (self.q_inv * (m1 - m2) % self.p) * self.q


def rsa_keypair(bits: int) -> RSAKey:
    """A key whose modulus has exactly `bits` bits: two random primes of bits/2, e = 65537."""
    while True:
        p, q = _prime(bits // 2), _prime(bits - bits // 2)
        n, phi = p * q, (p - 1) * (q - 1)
        if p != q and gmpy2.gcd(E, phi) == 1 and n.bit_length() == bits:
            d = gmpy2.invert(E, phi)
            return RSAKey(int(n), E, p, q, d % (p - 1), d % (q - 1), gmpy2.invert(q, p))


def _prime(bits: int) -> gmpy2.mpz:
    candidate = gmpy2.mpz(secrets.randbits(bits) | (3 << (bits - 2)) | 1)   # top two bits set: p*q has all bits
    return gmpy2.next_prime(candidate)
