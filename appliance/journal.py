"""The appliance's receipt log: signs each session's receipt, appends it to the journal with
fsync, and serves bundles, checkpoints and proofs. Memory holds the Merkle tree's hashes and
a small index (session id → seq → byte offset), never the entries: an entry is read back from
the journal when asked for.

Invariants:
- An entry is in the tree only once its journal line is on disk (written and fsynced).
- Entry `seq` is journal line `seq` and leaf `seq`: the journal is the log.
- A journal line is `{"receipt":<the receipt's RFC 8785 JSON>,"signature":"<base64>"}`, so
  its leaf is a slice of the line and can be rehashed without parsing it.
- After a failed write the log is unhealthy and refuses every later receipt, so the
  appliance admits no new session it could not account for (fail closed) until restarted.
- A signed checkpoint (size and root only) is kept beside the journal, written every
  `checkpoint_interval` receipts and at close. On start, the lines it covers are rehashed and
  must give its root; the lines after it are checked whole (schema, signature, sequence). A
  bad journal or checkpoint stops start-up. A torn last line (a write that never returned)
  is cut off.
- Appends, and whatever must see the log at one instant, run under one lock; appends run on
  the log's own thread, so client work on the default executor never delays a teardown.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from array import array
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from appliance.journal_index import SessionIndex
from durable import create_secret, fsync_dir, replace
from transparency import receipt as receipts
from transparency.jcs import canonical
from transparency.merkle import MerkleTree, leaf_hash
from transparency.note import Checkpoint, NoteError, Verifier, open_checkpoint, raw_public
from transparency.verify import Consistency, encode_hashes

log = logging.getLogger("keep.receipts")

JOURNAL_NAME = "receipts.jsonl"
CHECKPOINT_NAME = "receipts.checkpoint"
_HEAD = b'{"receipt":'
_SIGNATURE = b',"signature":"'
_TAIL = b'"}\n'
T = TypeVar("T")


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
        return _HEAD + canonical(self.receipt) + _SIGNATURE + self.signature.encode() + _TAIL


def leaf_of(line: bytes) -> bytes:
    """The receipt's RFC 8785 bytes inside its journal line; ValueError if it has no such."""
    cut = line.rfind(_SIGNATURE)
    if not line.startswith(_HEAD) or not line.endswith(_TAIL) or cut < 0:
        raise ValueError("not a journal line")
    return line[len(_HEAD) : cut]


def _field(leaf: bytes, name: bytes, end: bytes) -> bytes:
    start = leaf.find(name)
    stop = leaf.find(end, start + len(name))
    if start < 0 or stop < 0:
        raise ValueError("a receipt field is missing")
    return leaf[start + len(name) : stop]


def _quick(line: bytes, number: int) -> tuple[bytes, bytes]:
    """A line the signed checkpoint covers: its leaf and session id, checked only for its
    place in the sequence; the checkpoint's root vouches for its bytes."""
    try:
        leaf = leaf_of(line)
        seq = int(_field(leaf, b'"seq":', b","))
        session_id = _field(leaf, b'"session_id":"', b'"')
    except ValueError as exc:
        raise JournalError(
            f"journal line {number + 1} fails its checks ({type(exc).__name__})"
        ) from None
    if seq != number:
        raise JournalError(f"journal line {number + 1} is out of sequence")
    return leaf, session_id


def _whole(line: bytes, number: int, public: bytes) -> tuple[bytes, bytes]:
    """A line after the signed checkpoint: schema, signature, sequence and exact form."""
    try:
        obj = json.loads(line)
        if not isinstance(obj, dict) or set(obj) != {"receipt", "signature"}:
            raise ValueError("not a journal entry")
        entry = Entry(obj["receipt"], obj["signature"])
        receipts.verify_signature(entry.receipt, entry.signature, public)
    except (ValueError, KeyError, TypeError) as exc:
        raise JournalError(
            f"journal line {number + 1} fails its checks ({type(exc).__name__})"
        ) from None
    if entry.receipt["seq"] != number:
        raise JournalError(f"journal line {number + 1} is out of sequence")
    if entry.line() != line:
        raise JournalError(f"journal line {number + 1} is not in its canonical form")
    return leaf_of(line), entry.receipt["session_id"].encode()


class ReceiptLog:
    def __init__(
        self, state_dir: Path, key: Ed25519PrivateKey, *, checkpoint_interval: int = 1000
    ) -> None:
        self._key = key
        self.verifier = Verifier.of(receipts.log_name(raw_public(key)), key)
        self.appliance_id = receipts.appliance_id(self.verifier.public)
        self.path = state_dir / JOURNAL_NAME
        self.checkpoint_path = state_dir / CHECKPOINT_NAME
        self._interval = checkpoint_interval
        self._lock = threading.Lock()
        self._tree = MerkleTree()
        self._offsets = array("Q", [0])  # line seq spans [_offsets[seq], _offsets[seq + 1])
        self._index = SessionIndex()
        self._checkpoint: tuple[int, str] | None = None
        self._saved = 0
        self.healthy = True
        # Told of each write: its seconds and whether it succeeded (the metrics listen here).
        self.on_write: Callable[[float, bool], None] | None = None
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._reader = os.open(self.path, os.O_RDONLY)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keep-receipts")
        fsync_dir(state_dir)

    @property
    def name(self) -> str:
        return self.verifier.name

    def __len__(self) -> int:
        return len(self._tree)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run `fn` on the log's own thread, behind every receipt already submitted."""
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        """Finish every submitted receipt, keep a checkpoint for the next start, close."""
        self._executor.shutdown(wait=True)
        with self._lock:
            self._save_checkpoint()
        os.close(self._fd)
        os.close(self._reader)

    def _trusted(self) -> Checkpoint | None:
        try:
            note = self.checkpoint_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise JournalError(
                f"the journal's checkpoint cannot be read ({type(exc).__name__})"
            ) from None
        try:
            trusted = open_checkpoint(note, self.verifier)
        except NoteError:
            raise JournalError("the journal's checkpoint fails its checks") from None
        self._checkpoint = (trusted.size, note)
        self._saved = trusted.size
        return trusted

    def _load(self) -> None:
        trusted = self._trusted()
        end = 0
        if self.path.exists():
            with self.path.open("rb") as journal:
                for number, line in enumerate(journal):
                    if not line.endswith(b"\n"):
                        break  # torn: cut off below
                    if trusted is not None and number < trusted.size:
                        leaf, session_id = _quick(line, number)
                    else:
                        if trusted is not None and number == trusted.size:
                            self._check_root(trusted)
                        leaf, session_id = _whole(line, number, self.verifier.public)
                    self._tree.append(leaf)
                    self._index.add(session_id)
                    end += len(line)
                    self._offsets.append(end)
            if self.path.stat().st_size > end:
                self._cut(end)
        if trusted is not None and len(self._tree) <= trusted.size:
            if len(self._tree) < trusted.size:
                raise JournalError("the journal is shorter than its signed checkpoint")
            self._check_root(trusted)
        self._index.settle()
        log.info("receipt journal verified: %d entries", len(self._tree))

    def _check_root(self, trusted: Checkpoint) -> None:
        if self._tree.root(trusted.size) != trusted.root:
            raise JournalError(
                f"the journal's first {trusted.size} entries do not match its signed checkpoint"
            )

    def _cut(self, end: int) -> None:
        log.warning("cut a torn last journal line (%d bytes)", self.path.stat().st_size - end)
        with self.path.open("r+b") as handle:
            handle.truncate(end)
            os.fsync(handle.fileno())

    def issue(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Sign, journal with fsync, and log one receipt. Thread-safe; blocks on disk."""
        with self._lock:
            if not self.healthy:
                raise ReceiptWriteError("the receipt journal failed earlier")
            body = {
                "v": receipts.VERSION,
                "appliance_id": self.appliance_id,
                "seq": len(self._tree),
                **fields,
            }
            started = time.perf_counter()
            line = Entry(body, receipts.sign(body, self._key)).line()
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError("short write")
                os.fsync(self._fd)
            except OSError as exc:
                self.healthy = False
                log.error("receipt journal write failed (%s); refusing new sessions", exc.strerror)
                self._wrote(started, ok=False)
                raise ReceiptWriteError("the receipt could not be written") from None
            self._wrote(started, ok=True)
            self._tree.append(leaf_of(line))
            self._index.add(body["session_id"].encode())
            self._offsets.append(self._offsets[-1] + len(line))
            if len(self._tree) - self._saved >= self._interval:
                self._save_checkpoint()
            return body

    def _wrote(self, started: float, *, ok: bool) -> None:
        if self.on_write is not None:
            self.on_write(time.perf_counter() - started, ok)

    def _save_checkpoint(self) -> None:
        """Keep a signed checkpoint of the log as it is, so the next start rehashes what it
        covers instead of checking every signature. Losing one costs only start-up time."""
        size, note = self._checkpoint_now()
        if size == self._saved:
            return
        try:
            replace(self.checkpoint_path, note.encode())
        except OSError as exc:
            log.warning("the journal's checkpoint could not be kept (%s)", exc.strerror)
            return
        self._saved = size

    def seq_of(self, session_id: str) -> int | None:
        with self._lock:
            for seq in self._index.candidates(session_id.encode()):
                if self._read(seq).receipt["session_id"] == session_id:
                    return seq
        return None

    def _read(self, seq: int) -> Entry:
        """Entry `seq`, read back from the journal; its bytes must still be its leaf's."""
        start, end = self._offsets[seq], self._offsets[seq + 1]
        line = os.pread(self._reader, end - start, start)
        try:
            if leaf_hash(leaf_of(line)) != self._tree.leaf(seq):
                raise ValueError("changed on disk")
            obj = json.loads(line)
        except ValueError:
            raise JournalError(f"journal line {seq + 1} changed since start-up") from None
        return Entry(obj["receipt"], obj["signature"])

    def entry(self, seq: int) -> Entry:
        with self._lock:
            return self._read(seq)

    def entries(self, after: int, limit: int) -> list[Entry]:
        with self._lock:
            return [self._read(seq) for seq in range(after, min(after + limit, len(self._tree)))]

    def pull(self, after: int, limit: int) -> tuple[int, str, list[Entry]]:
        """A checkpoint and the entries after `after`, from one instant of the log: the
        checkpoint covers every entry returned, and no append falls between the two."""
        with self._lock:
            size, note = self._checkpoint_now()
            return size, note, [self._read(seq) for seq in range(after, min(after + limit, size))]

    def checkpoint(self) -> tuple[int, str]:
        """(size, signed checkpoint note) for the log as it is now."""
        with self._lock:
            return self._checkpoint_now()

    def _checkpoint_now(self) -> tuple[int, str]:
        size = len(self._tree)
        if self._checkpoint is None or self._checkpoint[0] != size:
            note = Checkpoint(self.name, size, self._tree.root(size)).sign(self.name, self._key)
            self._checkpoint = (size, note)
        return self._checkpoint

    def bundle(self, seq: int) -> dict[str, Any]:
        with self._lock:
            size, note = self._checkpoint_now()
            entry = self._read(seq)
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
            if not 0 <= old_size <= size <= len(self._tree):
                raise ValueError("tree sizes out of range")
            proof = self._tree.consistency_proof(old_size, size) if 0 < old_size < size else []
        return Consistency(old_size, size, tuple(proof))
