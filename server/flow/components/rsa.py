"""RSA key generation with gmpy2 (used by Intersection's blind signatures and HomoLR's key exchange)."""
from __future__ import annotations

import secrets

import gmpy2


def rsa_keypair(bits: int) -> tuple[int, int, int]:
    """(n, e, d) with n of `bits` bits: two random primes of bits/2, e = 65537."""
    e = 65537
    while True:
        p, q = (_prime(bits // 2), _prime(bits - bits // 2))
        n, phi = p * q, (p - 1) * (q - 1)
        if p != q and gmpy2.gcd(e, phi) == 1 and n.bit_length() == bits:
            return int(n), e, int(gmpy2.invert(e, phi))


def _prime(bits: int) -> gmpy2.mpz:
    candidate = gmpy2.mpz(secrets.randbits(bits) | (3 << (bits - 2)) | 1)   # top two bits set: p*q has all bits
    return gmpy2.next_prime(candidate)
