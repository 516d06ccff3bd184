"""Offline verification of receipt bundles: what `keep verify` runs.

A bundle is what the appliance's `GET /v1/receipts` returns and what control exports, one per
line: {"receipt", "signature", "index", "inclusion_proof", "checkpoint"}. Checked in order:
the checkpoint's signature, the receipt's schema and signature, its inclusion in the
checkpoint's tree and, given a checkpoint kept from before, that the log only grew since.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transparency.encoding import b64decode, b64encode
from transparency.merkle import ProofError, verify_consistency, verify_inclusion
from transparency.note import Checkpoint, NoteError, UnknownKey, Verifier, open_checkpoint
from transparency.receipt import (
    ForeignReceipt,
    ReceiptError,
    receipt_leaf_hash,
    verify_signature,
)

BUNDLE_FIELDS = frozenset({"receipt", "signature", "index", "inclusion_proof", "checkpoint"})
MAX_PROOF_HASHES = 64


class Invalid(Exception):
    """The bundle is wrong: tampered, truncated, or from a forked or rolled-back log."""


class Unverifiable(Exception):
    """The bundle cannot be checked with what we hold, such as an unknown key."""


@dataclass(frozen=True)
class Consistency:
    """A consistency proof between two tree sizes, as `GET /v1/receipts/consistency` gives."""

    old_size: int
    size: int
    proof: tuple[bytes, ...]

    @classmethod
    def parse(cls, obj: Any) -> Consistency:
        if not isinstance(obj, dict) or set(obj) != {"from", "to", "proof"}:
            raise Invalid("a consistency proof has exactly from, to and proof")
        old, new = obj["from"], obj["to"]
        if type(old) is not int or type(new) is not int or not 0 <= old <= new:
            raise Invalid("a consistency proof's sizes are malformed")
        return cls(old, new, tuple(decode_hashes(obj["proof"])))

    def encode(self) -> dict[str, Any]:
        return {"from": self.old_size, "to": self.size, "proof": encode_hashes(self.proof)}


def encode_hashes(hashes: Sequence[bytes]) -> list[str]:
    return [b64encode(h) for h in hashes]


def decode_hashes(value: Any) -> list[bytes]:
    if not isinstance(value, list) or len(value) > MAX_PROOF_HASHES:
        raise Invalid("a proof is a list of at most 64 hashes")
    out = []
    for item in value:
        try:
            out.append(b64decode(item))
        except ValueError:
            raise Invalid("a proof hash is not base64") from None
    return out


def checkpoint_of(note: Any, verifier: Verifier) -> Checkpoint:
    if not isinstance(note, str):
        raise Invalid("the checkpoint is not text")
    try:
        return open_checkpoint(note, verifier)
    except UnknownKey as exc:
        raise Unverifiable(str(exc)) from None
    except NoteError as exc:
        raise Invalid(f"checkpoint: {exc}") from None


def verify_bundle(
    bundle: Any,
    verifier: Verifier,
    *,
    previous: Checkpoint | None = None,
    consistency: Consistency | None = None,
) -> Checkpoint:
    """Raise Invalid or Unverifiable with the reason; return the checkpoint that proved it."""
    if not isinstance(bundle, dict) or set(bundle) != BUNDLE_FIELDS:
        raise Invalid(
            "a receipt bundle has exactly receipt, signature, index, inclusion_proof and checkpoint"
        )
    checkpoint = checkpoint_of(bundle["checkpoint"], verifier)
    receipt = bundle["receipt"]
    try:
        verify_signature(receipt, bundle["signature"], verifier.public)
    except ForeignReceipt as exc:
        raise Unverifiable(str(exc)) from None
    except ReceiptError as exc:
        raise Invalid(str(exc)) from None
    index = bundle["index"]
    if type(index) is not int or index != receipt["seq"]:
        raise Invalid("the bundle's index is not the receipt's sequence number")
    try:
        verify_inclusion(
            receipt_leaf_hash(receipt),
            index,
            checkpoint.size,
            decode_hashes(bundle["inclusion_proof"]),
            checkpoint.root,
        )
    except ProofError as exc:
        raise Invalid(f"inclusion: {exc}") from None
    if previous is not None:
        check_growth(previous, checkpoint, consistency)
    return checkpoint


def check_growth(
    previous: Checkpoint, checkpoint: Checkpoint, consistency: Consistency | None
) -> None:
    """The log behind `checkpoint` is the one behind `previous`, only longer."""
    if previous.origin != checkpoint.origin:
        raise Unverifiable("the earlier checkpoint is for another log")
    if previous.size > checkpoint.size:
        raise Invalid("the log is smaller than at the earlier checkpoint: rolled back")
    if previous.size == checkpoint.size:
        if previous.root != checkpoint.root:
            raise Invalid("two different trees of the same size: the log forked")
        return
    if consistency is None:
        raise Unverifiable("a consistency proof is needed to compare with the earlier checkpoint")
    if (consistency.old_size, consistency.size) != (previous.size, checkpoint.size):
        raise Unverifiable("the consistency proof is for other tree sizes")
    try:
        verify_consistency(
            previous.size, checkpoint.size, previous.root, checkpoint.root, consistency.proof
        )
    except ProofError as exc:
        raise Invalid(f"consistency: {exc}") from None


class Witness:
    """Every checkpoint one run has seen, cross-checked as it comes: one root per tree size,
    and a larger tree consistent with a smaller one wherever the proof covers the two."""

    def __init__(self, consistency: Consistency | None = None) -> None:
        self._roots: dict[int, bytes] = {}
        self._consistency = consistency
        self.largest: Checkpoint | None = None
        self.notes: dict[int, str] = {}

    def add(self, checkpoint: Checkpoint, note: str) -> None:
        """Take one checkpoint and the signed note it came from; Invalid on a conflict."""
        known = self._roots.get(checkpoint.size)
        if known is not None:
            if known != checkpoint.root:
                raise Invalid(
                    f"two checkpoints of size {checkpoint.size} with different roots: "
                    "the log forked"
                )
            return
        proof = self._consistency
        if proof is not None:
            if checkpoint.size == proof.size and proof.old_size in self._roots:
                self._check(proof, self._roots[proof.old_size], checkpoint.root)
            if checkpoint.size == proof.old_size and proof.size in self._roots:
                self._check(proof, checkpoint.root, self._roots[proof.size])
        self._roots[checkpoint.size] = checkpoint.root
        self.notes[checkpoint.size] = note
        if self.largest is None or checkpoint.size > self.largest.size:
            self.largest = checkpoint

    @staticmethod
    def _check(proof: Consistency, old_root: bytes, root: bytes) -> None:
        try:
            verify_consistency(proof.old_size, proof.size, old_root, root, proof.proof)
        except ProofError as exc:
            raise Invalid(f"consistency: {exc}") from None


def parse_json(text: str) -> Any:
    """A JSON value, or Invalid: a number too long to parse, nesting too deep and a lone
    surrogate are malformed input like any other."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, and the int digit limit
        raise Invalid("not JSON") from None
    return value
