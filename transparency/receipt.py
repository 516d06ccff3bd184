"""Session receipts: their exact schema, their signature, and their leaf in the log.

A receipt carries counts, times and identities, and nothing derived from content: no text,
no hash of a prompt (a known guess could be confirmed against a hash). It is signed as
"keep-receipt-v1\\n" || RFC 8785 JSON with the appliance's Ed25519 key; its RFC 8785 JSON is
also its leaf in the Merkle log, at index `seq`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from transparency.encoding import b64decode, b64encode
from transparency.jcs import MAX_SAFE_INTEGER, canonical
from transparency.merkle import leaf_hash

VERSION = 1
SIGNING_CONTEXT = b"keep-receipt-v1\n"

# The exact field set. A test pins it; adding a field is a schema change (bump VERSION).
FIELDS: dict[str, type] = {
    "v": int,
    "appliance_id": str,
    "seq": int,
    "session_id": str,
    "peer_id": str,
    "started_at": str,
    "ended_at": str,
    "model": str,
    "model_sha256": str,
    "prompt_tokens": int,
    "completion_tokens": int,
    "requests": int,
}
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")


class ReceiptError(ValueError):
    """A receipt is malformed or its signature does not verify."""


class ForeignReceipt(ReceiptError):
    """The receipt names another appliance than the key we hold: it cannot be checked."""


def appliance_id(public: bytes) -> str:
    """An appliance is named by its receipt key: the first 8 bytes of its sha256."""
    return "ka-" + hashlib.sha256(public).digest()[:8].hex()


def log_name(public: bytes) -> str:
    """The log's origin line, which is also the key's name in signed notes."""
    return f"keep.appliance/{appliance_id(public)}"


def check_shape(receipt: Any) -> dict[str, Any]:
    if not isinstance(receipt, dict) or set(receipt) != set(FIELDS):
        raise ReceiptError("the receipt does not have exactly the receipt fields")
    for name, kind in FIELDS.items():
        value = receipt[name]
        if type(value) is not kind:
            raise ReceiptError(f"receipt field {name} has the wrong type")
        if isinstance(value, int) and not 0 <= value <= MAX_SAFE_INTEGER:
            raise ReceiptError(f"receipt field {name} is negative or beyond 2^53")
    if receipt["v"] != VERSION:
        raise ReceiptError("unknown receipt version")
    if not (_TIME.match(receipt["started_at"]) and _TIME.match(receipt["ended_at"])):
        raise ReceiptError("receipt times are not RFC 3339 UTC with milliseconds")
    if receipt["ended_at"] < receipt["started_at"]:
        raise ReceiptError("the receipt ends before it starts")
    if not _SHA256.match(receipt["model_sha256"]):
        raise ReceiptError("receipt model_sha256 is not a sha256")
    for name in ("appliance_id", "session_id", "peer_id", "model"):
        if not _ID.match(receipt[name]):
            raise ReceiptError(f"receipt field {name} is malformed")
    return receipt


def leaf(receipt: dict[str, Any]) -> bytes:
    return canonical(receipt)


def receipt_leaf_hash(receipt: dict[str, Any]) -> bytes:
    return leaf_hash(leaf(receipt))


def sign(receipt: dict[str, Any], key: Ed25519PrivateKey) -> str:
    check_shape(receipt)
    return b64encode(key.sign(SIGNING_CONTEXT + canonical(receipt)))


def verify_signature(receipt: dict[str, Any], signature: Any, public: bytes) -> None:
    check_shape(receipt)
    if receipt["appliance_id"] != appliance_id(public):
        raise ForeignReceipt("the receipt names another appliance than the trusted key")
    try:
        raw = b64decode(signature)
    except ValueError:
        raise ReceiptError("the signature is not base64") from None
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(raw, SIGNING_CONTEXT + canonical(receipt))
    except InvalidSignature:
        raise ReceiptError("the receipt signature does not verify") from None
