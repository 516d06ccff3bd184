"""Server-sent events of a generation, padded so that their sizes say nothing of the text.

Each event carries one delta of text, so without padding the size of each encrypted record
follows the length of each token, and classifiers infer a conversation's topic from those
sizes alone, through TLS and WireGuard (Whisper Leak). Every event is therefore padded up to
a multiple of `bucket` bytes: JSON events with an `obfuscation` field of random characters
(the field OpenAI's own streams carry, which clients ignore), the `[DONE]` sentinel with an
SSE comment line, which every SSE parser skips. A bucket of 0 turns padding off.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

PAD_FIELD = "obfuscation"


def _pad(n: int) -> str:
    # Random rather than constant, so that a compressing hop cannot squeeze the padding out;
    # hex from one call, not a draw per character, since this runs for every token.
    return secrets.token_hex(n // 2 + 1)[:n]


def _padding_for(size: int, bucket: int) -> int:
    return -size % bucket if bucket else 0


def event(obj: dict[str, Any], bucket: int) -> bytes:
    """One `data:` event holding `obj`, its size a multiple of `bucket` when bucket > 0."""
    data = json.dumps(obj, ensure_ascii=False)
    if not bucket:
        return f"data: {data}\n\n".encode()
    # The field goes in as the object's last key, spliced where json.dumps would write it;
    # its value is hex and needs no escaping, so the object is serialised once.
    head = data[:-1] + (", " if obj else "") + f'"{PAD_FIELD}": "'
    size = len(f'data: {head}"}}\n\n'.encode())
    return f'data: {head}{_pad(_padding_for(size, bucket))}"}}\n\n'.encode()


def done(bucket: int) -> bytes:
    """The `[DONE]` sentinel, preceded by an SSE comment line that pads it to the bucket."""
    sentinel = b"data: [DONE]\n\n"
    if not bucket:
        return sentinel
    pad = _padding_for(len(sentinel) + len(": \n"), bucket)
    return f": {_pad(pad)}\n".encode() + sentinel
