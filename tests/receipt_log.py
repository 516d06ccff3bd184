"""A small, real receipt log for tests: an Ed25519 key, signed receipts, a tree, bundles."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from transparency import receipt as receipts
from transparency.merkle import MerkleTree
from transparency.note import Verifier, raw_public
from transparency.verify import Consistency, encode_hashes


def receipt_fields(public: bytes, seq: int, **overrides: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "appliance_id": receipts.appliance_id(public),
        "seq": seq,
        "session_id": f"sess_{seq:04d}abcdefghijklmnopqrstuvwxyz",
        "peer_id": "peer-1",
        "started_at": "2026-11-25T10:00:00.000Z",
        "ended_at": "2026-11-25T10:00:01.250Z",
        "model": "smollm2-135m-instruct",
        "model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "prompt_tokens": 20 + seq,
        "completion_tokens": 5 + seq,
        "requests": 1 + seq % 3,
        **overrides,
    }


@dataclass
class Log:
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    tree: MerkleTree = field(default_factory=MerkleTree)
    entries: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    @property
    def public(self) -> bytes:
        return raw_public(self.key)

    @property
    def name(self) -> str:
        return receipts.log_name(self.public)

    @property
    def verifier(self) -> Verifier:
        return Verifier.of(self.name, self.key)

    def add(self, **overrides: Any) -> dict[str, Any]:
        body = receipt_fields(self.public, len(self.entries), **overrides)
        self.entries.append((body, receipts.sign(body, self.key)))
        self.tree.append(receipts.leaf(body))
        return body

    def checkpoint(self, size: int | None = None) -> str:
        from transparency.note import Checkpoint

        n = len(self.tree) if size is None else size
        return Checkpoint(self.name, n, self.tree.root(n)).sign(self.name, self.key)

    def bundle(self, index: int, size: int | None = None) -> dict[str, Any]:
        n = len(self.tree) if size is None else size
        body, signature = self.entries[index]
        return {
            "receipt": copy.deepcopy(body),
            "signature": signature,
            "index": index,
            "inclusion_proof": encode_hashes(self.tree.inclusion_proof(index, n)),
            "checkpoint": self.checkpoint(n),
        }

    def consistency(self, old: int, new: int | None = None) -> Consistency:
        n = len(self.tree) if new is None else new
        return Consistency(old, n, tuple(self.tree.consistency_proof(old, n)))


def make_log(n: int) -> Log:
    log = Log()
    for _ in range(n):
        log.add()
    return log
