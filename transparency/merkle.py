"""RFC 6962 Merkle trees: hashing, proofs, and their verification (RFC 9162 section 2.1).

Leaves are hashed as SHA-256(0x00 || data) and nodes as SHA-256(0x01 || left || right), so a
leaf can never pass for a node. The tree keeps the roots of the complete subtrees it has seen
(above the smallest), so a root or a proof over any earlier size costs O(log n) hashes,
however long the log grows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof does not verify; the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only tree over leaf hashes, kept compact: the leaves, and the roots of the
    complete subtrees of 2**h leaves for h >= CACHED_FROM, each level one bytearray of 32-byte
    hashes. A smaller subtree is rehashed from its leaves when a proof needs it (at most
    2**CACHED_FROM - 1 hashes), so a tree of n leaves holds about 36 * n bytes."""

    CACHED_FROM = 4

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self._leaves = bytearray()
        self._levels: list[bytearray] = []  # _levels[j] holds height CACHED_FROM + j
        for h in leaf_hashes:
            self.append_hash(h)

    def __len__(self) -> int:
        return len(self._leaves) // HASH_SIZE

    def append(self, data: bytes) -> int:
        return self.append_hash(leaf_hash(data))

    def append_hash(self, h: bytes) -> int:
        if len(h) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        index = len(self)
        self._leaves += h
        span = 1 << self.CACHED_FROM
        if (index + 1) % span:
            return index
        # This leaf completed a cached subtree, and perhaps larger ones above it.
        node = self._hash_leaves(index + 1 - span, index + 1)
        j, i = 0, (index + 1) // span - 1
        while True:
            if len(self._levels) == j:
                self._levels.append(bytearray())
            self._levels[j] += node
            if i % 2 == 0:
                return index
            level = self._levels[j]
            node = node_hash(bytes(level[-2 * HASH_SIZE : -HASH_SIZE]), node)
            j, i = j + 1, i // 2

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < len(self):
            raise IndexError("leaf index out of range")
        return bytes(self._leaves[index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def leaves(self) -> bytes:
        """Every leaf hash, concatenated."""
        return bytes(self._leaves)

    def _hash_leaves(self, start: int, end: int) -> bytes:
        """MTH over leaves [start, end), from the leaves alone."""
        if end - start == 1:
            return self.leaf(start)
        k = _split(end - start)
        return node_hash(self._hash_leaves(start, start + k), self._hash_leaves(start + k, end))

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH over leaves [start, end); start is aligned to the subtree's split points."""
        size = end - start
        if size & (size - 1) == 0 and start % size == 0:
            height = size.bit_length() - 1
            if height == 0:
                return self.leaf(start)
            if height >= self.CACHED_FROM:
                i = start // size * HASH_SIZE
                return bytes(self._levels[height - self.CACHED_FROM][i : i + HASH_SIZE])
            return self._hash_leaves(start, end)
        k = _split(size)
        return node_hash(self._subtree(start, start + k), self._subtree(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        n = len(self) if size is None else size
        if not 0 <= n <= len(self):
            raise ValueError("tree size out of range")
        return EMPTY_ROOT if n == 0 else self._subtree(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(m, D[n]) of RFC 6962 section 2.1.1."""
        n = len(self) if size is None else size
        if not 0 <= index < n <= len(self):
            raise ValueError("leaf index or tree size out of range")
        return self._path(index, 0, n)

    def _path(self, m: int, start: int, end: int) -> list[bytes]:
        size = end - start
        if size == 1:
            return []
        k = _split(size)
        if m < k:
            return [*self._path(m, start, start + k), self._subtree(start + k, end)]
        return [*self._path(m - k, start + k, end), self._subtree(start, start + k)]

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """PROOF(m, D[n]) of RFC 6962 section 2.1.2."""
        n = len(self) if size is None else size
        if not 0 < old_size <= n <= len(self):
            raise ValueError("tree sizes out of range")
        return self._subproof(old_size, 0, n, True)

    def _subproof(self, m: int, start: int, end: int, whole: bool) -> list[bytes]:
        size = end - start
        if m == size:
            return [] if whole else [self._subtree(start, end)]
        k = _split(size)
        if m <= k:
            return [*self._subproof(m, start, start + k, whole), self._subtree(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self._subtree(start, start + k)]


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf` (a leaf hash) is entry `index` of the tree of `size` with `root`."""
    if not 0 <= index < size:
        raise ProofError("leaf index outside the tree")
    _check_hashes(proof)
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int, size: int, old_root: bytes, root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of `size` with `root` extends the one of `old_size`/`old_root`."""
    _check_hashes(proof)
    if old_size < 0 or old_size > size:
        raise ProofError("the old tree is larger than the new one")
    if old_size == size:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != root:
            raise ProofError("equal sizes with different roots")
        return
    if old_size == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is on the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn % 2 == 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != root:
        raise ProofError("consistency proof does not lead to the new root")


def _check_hashes(proof: Sequence[bytes]) -> None:
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("a proof hash is not 32 bytes")
