"""RFC 6962 known answers, and agreement with an independent implementation written here."""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transparency.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

# The reference tree of the Certificate Transparency test suite (RFC 6962).
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path)
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, consistency proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        3,
        8,
        [
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
]


def reference_tree() -> MerkleTree:
    tree = MerkleTree()
    for data in LEAVES:
        tree.append(data)
    return tree


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert MerkleTree().root() == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("size", range(1, 9))
def test_known_roots(size: int) -> None:
    assert reference_tree().root(size).hex() == ROOTS[size - 1]
    assert MerkleTree([leaf_hash(d) for d in LEAVES[:size]]).root().hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_known_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    tree = reference_tree()
    proof = tree.inclusion_proof(index, size)
    assert [p.hex() for p in proof] == path
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, bytes.fromhex(ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_known_consistency_proofs(old: int, new: int, path: list[str]) -> None:
    tree = reference_tree()
    proof = tree.consistency_proof(old, new)
    assert [p.hex() for p in proof] == path
    verify_consistency(
        old, new, bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1]), proof
    )


def independent_root(leaves: list[bytes]) -> bytes:
    """RFC 6962's MTH, written from the RFC's definition and sharing no code with Keep."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    left, right = independent_root(leaves[:k]), independent_root(leaves[k:])
    return hashlib.sha256(b"\x01" + left + right).digest()


def test_root_over_1000_leaves_matches_an_independent_implementation() -> None:
    leaves = [f"receipt {i}".encode() * (i % 7 + 1) for i in range(1000)]
    tree = MerkleTree()
    for data in leaves:
        tree.append(data)
    for size in (1000, 999, 512, 513, 1, 2, 3, 777):
        assert tree.root(size) == independent_root(leaves[:size]), size


@given(st.integers(1, 200), st.data())
def test_every_proof_verifies(size: int, data: st.DataObject) -> None:
    tree = MerkleTree()
    for i in range(size):
        tree.append(i.to_bytes(4, "big"))
    index = data.draw(st.integers(0, size - 1))
    verify_inclusion(tree.leaf(index), index, size, tree.inclusion_proof(index), tree.root())
    old = data.draw(st.integers(1, size))
    verify_consistency(old, size, tree.root(old), tree.root(), tree.consistency_proof(old))


@given(st.integers(2, 64), st.data())
def test_a_wrong_index_size_or_root_is_rejected(size: int, data: st.DataObject) -> None:
    tree = MerkleTree()
    for i in range(size):
        tree.append(i.to_bytes(4, "big"))
    index = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(index)
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
    with pytest.raises(ProofError):
        verify_inclusion(tree.leaf(index), other, size, proof, tree.root())
    # (A wrong tree size alone is not caught here: the checkpoint's signature binds the size
    # to the root, and test_verify tampers with that.)
    with pytest.raises(ProofError):
        verify_inclusion(tree.leaf(index), index, size, proof, tree.root(size - 1))
    old = data.draw(st.integers(1, size - 1))
    cons = tree.consistency_proof(old)
    with pytest.raises(ProofError):
        verify_consistency(old, size, tree.root(old), tree.root(size - 1), cons)
    with pytest.raises(ProofError):
        verify_consistency(old, size, tree.root(), tree.root(), cons)


def test_truncated_and_extended_proofs_are_rejected() -> None:
    tree = reference_tree()
    root = tree.root()
    proof = tree.inclusion_proof(5)
    with pytest.raises(ProofError, match="short"):
        verify_inclusion(tree.leaf(5), 5, 8, proof[:-1], root)
    with pytest.raises(ProofError, match="long"):
        verify_inclusion(tree.leaf(5), 5, 8, [*proof, proof[0]], root)
    cons = tree.consistency_proof(3)
    with pytest.raises(ProofError):
        verify_consistency(3, 8, tree.root(3), root, cons[:-1])
    with pytest.raises(ProofError):
        verify_consistency(3, 8, tree.root(3), root, [*cons, cons[0]])


def test_a_tree_holds_about_36_bytes_a_leaf() -> None:
    """The appliance keeps its whole log's tree in memory: a million receipts must stay
    tens of megabytes, not a Python object per node."""
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(20_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tree = MerkleTree(hashes)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert tree.root() == independent_root_of_hashes(hashes)
    assert grown < 40 * len(hashes), grown


def independent_root_of_hashes(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    left = independent_root_of_hashes(hashes[:k])
    right = independent_root_of_hashes(hashes[k:])
    return hashlib.sha256(b"\x01" + left + right).digest()
