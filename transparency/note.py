"""C2SP signed notes (c2sp.org/signed-note) and transparency-log checkpoints
(c2sp.org/tlog-checkpoint), with Ed25519 signatures.

A checkpoint is the text "<origin>\\n<tree size>\\n<base64 root hash>\\n", followed by a blank
line and one "— <key name> <base64(key id || signature)>" line per signature. A verifier key is
written "<name>+<key id hex>+<base64(0x01 || public key)>".
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from transparency.encoding import b64decode, b64encode
from transparency.merkle import HASH_SIZE

_ED25519 = 0x01
_SIG_PREFIX = "\u2014 "
_NAME = re.compile(r"^[^\s+]+$")
_KEY_ID = re.compile(r"^[0-9a-f]{8}$")
_SIZE = re.compile(r"^(0|[1-9][0-9]{0,18})$")
MAX_NOTE_BYTES = 1 << 20


class NoteError(ValueError):
    """A note or checkpoint is malformed, or its signature does not verify."""


class UnknownKey(NoteError):
    """No signature on the note is by the key we trust: it cannot be checked, not bad."""


def _b64decode(text: str) -> bytes:
    try:
        return b64decode(text)
    except ValueError:
        raise NoteError("bad base64") from None


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([_ED25519]) + public).digest()[:4]


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key (of a private key's public half)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public)

    def encode(self) -> str:
        blob = b64encode(bytes([_ED25519]) + self.public)
        return f"{self.name}+{self.id.hex()}+{blob}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)  # base64 may hold '+'; name and id may not
        if len(parts) != 3 or not _NAME.match(parts[0]) or not _KEY_ID.match(parts[1]):
            raise NoteError("a verifier key is <name>+<8 hex digits>+<base64 key>")
        blob = _b64decode(parts[2])
        if len(blob) != 33 or blob[0] != _ED25519:
            raise NoteError("the verifier key is not an Ed25519 key")
        verifier = cls(parts[0], blob[1:])
        if verifier.id.hex() != parts[1]:
            raise NoteError("the verifier key's id does not match its key")
        return verifier

    @classmethod
    def of(cls, name: str, key: Ed25519PrivateKey | Ed25519PublicKey) -> Verifier:
        if not _NAME.match(name):
            raise NoteError("a key name has no spaces and no '+'")
        return cls(name, raw_public(key))


def sign_note(body: str, name: str, key: Ed25519PrivateKey) -> str:
    if not body.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    verifier = Verifier.of(name, key)
    signature = key.sign(body.encode())
    blob = b64encode(verifier.id + signature)
    return f"{body}\n{_SIG_PREFIX}{name} {blob}\n"


def open_note(note: str, verifier: Verifier) -> str:
    """The note's text if `verifier` signed it. UnknownKey if no signature is by that key."""
    try:
        encoded = note.encode()
    except UnicodeEncodeError:  # a lone surrogate, which JSON can carry
        raise NoteError("the note is not UTF-8 text") from None
    if len(encoded) > MAX_NOTE_BYTES:
        raise NoteError("the note is too large")
    body, sep, sigs = note.rpartition("\n\n")
    if not sep or not body:
        raise NoteError("a note is text, a blank line, then signatures")
    body += "\n"
    if not sigs.endswith("\n") or not sigs.strip("\n"):
        raise NoteError("a note's signature block ends with a newline")
    for line in sigs[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, blob_text = line[len(_SIG_PREFIX) :].partition(" ")
        blob = _b64decode(blob_text)
        if len(blob) < 5:
            raise NoteError("a signature is too short")
        if name != verifier.name or blob[:4] != verifier.id:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public).verify(blob[4:], body.encode())
        except InvalidSignature:
            raise NoteError("the signature does not verify") from None
        return body
    raise UnknownKey("the note carries no signature by the trusted key")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{b64encode(self.root)}\n"

    def sign(self, name: str, key: Ed25519PrivateKey) -> str:
        return sign_note(self.body(), name, key)

    @classmethod
    def parse_body(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint has an origin, a size and a root hash")
        origin, size, root_text = lines[0], lines[1], lines[2]
        if not origin or not _SIZE.match(size):
            raise NoteError("a checkpoint's origin or size is malformed")
        root = _b64decode(root_text)
        if len(root) != HASH_SIZE:
            raise NoteError("a checkpoint's root hash is not 32 bytes")
        return cls(origin, int(size), root)


def open_checkpoint(note: str, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """A checkpoint signed by `verifier`, with the expected origin (the key's name by
    default)."""
    checkpoint = Checkpoint.parse_body(open_note(note, verifier))
    if checkpoint.origin != (origin or verifier.name):
        raise NoteError("the checkpoint is for another log")
    return checkpoint
