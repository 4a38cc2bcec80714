"""Which create idempotency keys may already be in the store, answered from memory.

Every SDK create carries a fresh request_id, and nearly all of them are new: asking the store
for each one put a SQLite read on the event loop of every create. A Bloom filter of the keys
committed within the window (loaded once at start, then fed by each commit) answers "surely
new" without a read; only a "maybe" (a real retry, or a false positive) reads the store. The
filter never forgets, so past its capacity it answers "maybe" more often: slower, never wrong.
"""
from __future__ import annotations

from typing import Iterable

BITS = 1 << 23   # 1 MiB: about 2 % false positives at a million keys
PROBES = 5
_MASK = BITS - 1


class RequestKeys:
    def __init__(self, keys: Iterable[str] = ()):
        self._bits = bytearray(BITS // 8)
        for key in keys:
            self.add(key)

    @staticmethod
    def _probes(key: str):
        # Python's str hash: salted per process, which is fine for a filter that lives in memory.
        h = hash(key) & 0xFFFFFFFFFFFFFFFF
        a, b = h & 0xFFFFFFFF, (h >> 32) | 1
        return ((a + i * b) & _MASK for i in range(PROBES))

    def add(self, key: str) -> None:
        bits = self._bits
        for p in self._probes(key):
            bits[p >> 3] |= 1 << (p & 7)

    def may_exist(self, key: str) -> bool:
        bits = self._bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in self._probes(key))
