"""The appliance's receipt log: signs each session's receipt, appends it to the journal with
fsync, and serves bundles, checkpoints and proofs from the Merkle tree it keeps in memory.

Invariants:
- An entry is in the tree only once its journal line is on disk (written and fsynced).
- Entry `seq` is journal line `seq` and leaf `seq`: the journal is the log.
- After a failed write the log is unhealthy and refuses every later receipt, so the
  appliance admits no new session it could not account for (fail closed) until restarted.
- On start, every journal line is checked (schema, signature, sequence) before serving; a
  bad journal stops start-up. A torn last line (a write that never returned) is cut off.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from durable import create_secret, fsync_dir
from transparency import receipt as receipts
from transparency.merkle import MerkleTree
from transparency.note import Checkpoint, Verifier, raw_public
from transparency.verify import Consistency, encode_hashes

log = logging.getLogger("keep.receipts")

JOURNAL_NAME = "receipts.jsonl"


class JournalError(Exception):
    """The journal or key cannot be read, or fails its checks: the appliance must not start."""


class ReceiptWriteError(Exception):
    """A receipt could not be made durable; the log is now closed to new receipts."""


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The appliance's Ed25519 key, created with mode 0600 on first start."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        create_secret(path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        log.info("created a receipt signing key")
    try:
        loaded = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise JournalError(f"the receipt key cannot be read ({type(exc).__name__})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise JournalError("the receipt key is not an Ed25519 key")
    return loaded


@dataclass(frozen=True)
class Entry:
    receipt: dict[str, Any]
    signature: str

    def line(self) -> bytes:
        return (
            json.dumps(
                {"receipt": self.receipt, "signature": self.signature},
                separators=(",", ":"),
                sort_keys=True,
            ).encode()
            + b"\n"
        )


class ReceiptLog:
    def __init__(self, state_dir: Path, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.verifier = Verifier.of(receipts.log_name(raw_public(key)), key)
        self.appliance_id = receipts.appliance_id(self.verifier.public)
        self.path = state_dir / JOURNAL_NAME
        self._lock = threading.Lock()
        self._tree = MerkleTree()
        self._entries: list[Entry] = []
        self._by_session: dict[str, int] = {}
        self._checkpoint: tuple[int, str] | None = None
        self.healthy = True
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fsync_dir(state_dir)

    @property
    def name(self) -> str:
        return self.verifier.name

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        os.close(self._fd)

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning("cut a torn last journal line (%d bytes)", len(data) - cut)
            with self.path.open("r+b") as handle:
                handle.truncate(cut)
                os.fsync(handle.fileno())
            data = data[:cut]
        for number, line in enumerate(data.splitlines()):
            try:
                obj = json.loads(line)
                entry = Entry(obj["receipt"], obj["signature"])
                receipts.verify_signature(entry.receipt, entry.signature, self.verifier.public)
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(
                    f"journal line {number + 1} fails its checks ({type(exc).__name__})"
                ) from None
            if entry.receipt["seq"] != number:
                raise JournalError(f"journal line {number + 1} is out of sequence")
            self._append(entry)
        log.info("receipt journal verified: %d entries", len(self._entries))

    def _append(self, entry: Entry) -> None:
        self._tree.append(receipts.leaf(entry.receipt))
        self._entries.append(entry)
        self._by_session[entry.receipt["session_id"]] = entry.receipt["seq"]

    def issue(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Sign, journal with fsync, and log one receipt. Thread-safe; blocks on disk."""
        with self._lock:
            if not self.healthy:
                raise ReceiptWriteError("the receipt journal failed earlier")
            body = {
                "v": receipts.VERSION,
                "appliance_id": self.appliance_id,
                "seq": len(self._entries),
                **fields,
            }
            entry = Entry(body, receipts.sign(body, self._key))
            line = entry.line()
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError("short write")
                os.fsync(self._fd)
            except OSError as exc:
                self.healthy = False
                log.error("receipt journal write failed (%s); refusing new sessions", exc.strerror)
                raise ReceiptWriteError("the receipt could not be written") from None
            self._append(entry)
            return body

    def seq_of(self, session_id: str) -> int | None:
        return self._by_session.get(session_id)

    def entry(self, seq: int) -> Entry:
        return self._entries[seq]

    def entries(self, after: int, limit: int) -> list[Entry]:
        with self._lock:
            return self._entries[after : after + limit]

    def checkpoint(self) -> tuple[int, str]:
        """(size, signed checkpoint note) for the log as it is now."""
        with self._lock:
            size = len(self._entries)
            if self._checkpoint is None or self._checkpoint[0] != size:
                note = Checkpoint(self.name, size, self._tree.root(size)).sign(self.name, self._key)
                self._checkpoint = (size, note)
            return self._checkpoint

    def bundle(self, seq: int) -> dict[str, Any]:
        size, note = self.checkpoint()
        with self._lock:
            entry = self._entries[seq]
            proof = self._tree.inclusion_proof(seq, size)
        return {
            "receipt": entry.receipt,
            "signature": entry.signature,
            "index": seq,
            "inclusion_proof": encode_hashes(proof),
            "checkpoint": note,
        }

    def consistency(self, old_size: int, size: int) -> Consistency:
        with self._lock:
            if not 0 <= old_size <= size <= len(self._entries):
                raise ValueError("tree sizes out of range")
            proof = self._tree.consistency_proof(old_size, size) if 0 < old_size < size else []
        return Consistency(old_size, size, tuple(proof))
