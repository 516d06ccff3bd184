"""Session id → journal seq, in 16 bytes an entry however long the log grows.

Each session id is kept as an 8-byte BLAKE2b key. Most keys sit in one sorted array with
their seqs beside them (binary search); the newest few thousand sit unsorted in a bytearray
(one scan at C speed) until they are merged in. A key names candidates only: two ids can
share one, so the journal reads each candidate's entry and compares the id itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

KEY_SIZE = 8
MERGE_AT = 1 << 16


def key_of(session_id: bytes) -> bytes:
    return hashlib.blake2b(session_id, digest_size=KEY_SIZE).digest()


class SessionIndex:
    def __init__(self) -> None:
        self._keys = np.empty(0, dtype="<u8")  # sorted
        self._seqs = np.empty(0, dtype=np.int64)  # _seqs[i] is the seq of _keys[i]
        self._recent = bytearray()  # keys of seqs len(_keys) onwards, in seq order

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent) // KEY_SIZE

    def add(self, session_id: bytes) -> None:
        """Index the next seq."""
        self._recent += key_of(session_id)
        if len(self._recent) >= MERGE_AT * KEY_SIZE:
            self.settle()

    def settle(self) -> None:
        """Merge the recent keys into the sorted array (after a bulk load, or every
        MERGE_AT additions, so a lookup never scans more than that)."""
        if not self._recent:
            return
        base = len(self._keys)
        keys = np.concatenate([self._keys, np.frombuffer(bytes(self._recent), dtype="<u8")])
        seqs = np.concatenate([self._seqs, np.arange(base, len(keys), dtype=np.int64)])
        order = np.argsort(keys, kind="stable")
        self._keys, self._seqs = keys[order], seqs[order]
        self._recent = bytearray()

    def candidates(self, session_id: bytes) -> Iterator[int]:
        """Every seq whose session id has the same key, newest first."""
        key = key_of(session_id)
        base = len(self._keys)
        at = self._recent.rfind(key)
        while at >= 0:
            if at % KEY_SIZE == 0:
                yield base + at // KEY_SIZE
            at = self._recent.rfind(key, 0, at + KEY_SIZE - 1)
        value = np.frombuffer(key, dtype="<u8")[0]
        low = int(np.searchsorted(self._keys, value, side="left"))
        high = int(np.searchsorted(self._keys, value, side="right"))
        yield from (int(s) for s in self._seqs[low:high][::-1])
