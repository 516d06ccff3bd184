"""Strict base64: one encoding per byte string, so a flipped padding bit is not ignored."""

from __future__ import annotations

import base64
import binascii


def b64decode(text: object) -> bytes:
    """Decode standard, padded base64, refusing any text that is not the canonical encoding
    of what it decodes to (Python alone ignores non-zero bits in the last character)."""
    if not isinstance(text, str):
        raise ValueError("base64 must be a string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
