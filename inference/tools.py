"""Tool calls in a model's output: the tagged form every model writes them in, and a parser
that reads that form as it streams.

Keep's grammar (inference.grammar.tool_calls) makes the model write each call as

    <tool_call>
    {"name": "<function>", "arguments": {...}}
    </tool_call>

with nothing but whitespace between calls, and only text before the first. The parser turns
text, in pieces of any size, into content, then for each call its name and its arguments in
fragments. The arguments are the model's own JSON text: a stream's fragments join to exactly
the string a non-streamed response carries.

Invariant: the parser never emits text that a later piece could show to be something else.
Content that may be the start of `<tool_call>` is held back, and so are the last characters
of the arguments that may be the end of the call's wrapper (`}` and the closing tag).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
# OpenAI's pattern for function names.
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
# The call's head, up to where its arguments begin: the grammar writes the keys in this order.
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([a-zA-Z0-9_-]{1,64})"\s*,\s*"arguments"\s*:\s*')
# The most text a head can take (64-character name, the converter's widest spacing).
_MAX_HEAD = 512


@dataclass(frozen=True)
class Function:
    """A tool the model may call: `parameters` is a JSON Schema for its arguments."""

    name: str
    description: str | None
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A call the assistant made: `arguments` is the JSON text of an object."""

    id: str
    name: str
    arguments: str


def call_text(name: str, arguments: str) -> str:
    """A call in the tagged form, as the model would write it."""
    try:
        json.loads(arguments)
        body = arguments
    except (ValueError, RecursionError):  # a client's history: not JSON, or nested too deep
        body = json.dumps(arguments, ensure_ascii=False)
    return f'{CALL_OPEN}\n{{"name": {json.dumps(name)}, "arguments": {body}}}\n{CALL_CLOSE}'


@dataclass(frozen=True)
class Content:
    text: str


@dataclass(frozen=True)
class CallStarted:
    index: int
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    text: str


@dataclass(frozen=True)
class CallFinished:
    index: int
    name: str
    arguments: str


Piece = Content | CallStarted | ArgumentsDelta | CallFinished


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def _safe_arguments(region: str) -> str:
    """The part of the arguments seen so far that no later text can take back: without any
    trailing start of the closing tag, whitespace, one `}` (perhaps the wrapper's) and
    whitespace."""
    end = len(region) - _partial_suffix(region, CALL_CLOSE)
    text = region[:end].rstrip()
    if text.endswith("}"):
        text = text[:-1].rstrip()
    return text


def _complete(body: str) -> str | None:
    """The arguments of a call whose text (after the head) is `body`, if it is whole: the
    JSON before the wrapper's closing brace."""
    text = body.rstrip()
    if not text.endswith("}"):
        return None
    arguments = text[:-1].rstrip()
    try:
        json.loads(arguments)
    except (ValueError, RecursionError):
        return None
    return arguments


class ToolCallParser:
    """Feed it the model's text; it returns what can be told so far."""

    def __init__(self) -> None:
        self._state = "content"  # content | head | arguments | between
        self._buffer = ""
        self._sent = 0  # of the current call's arguments
        self._name = ""
        self.calls: list[CallFinished] = []
        self._index = -1

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        out: list[Piece] = []
        while True:
            before = (self._state, len(self._buffer))
            getattr(self, f"_{self._state}")(out)
            if (self._state, len(self._buffer)) == before:
                return out

    def finish(self) -> list[Piece]:
        """The rest, at the end of generation: held-back content is content after all; a
        call cut off (by max_tokens or a stop string) is not returned."""
        out: list[Piece] = []
        if self._state == "content" and self._buffer:
            out.append(Content(self._buffer))
        self._buffer = ""
        return out

    def _content(self, out: list[Piece]) -> None:
        self._seek_open(out, content=True)

    def _between(self, out: list[Piece]) -> None:  # only whitespace, under the grammar
        self._seek_open(out, content=False)

    def _seek_open(self, out: list[Piece], *, content: bool) -> None:
        """Up to the next opening tag: the text before it is content, or dropped; a tail
        that may be the tag's start waits for more."""
        at = self._buffer.find(CALL_OPEN)
        end = len(self._buffer) - _partial_suffix(self._buffer, CALL_OPEN) if at < 0 else at
        if content and end:
            out.append(Content(self._buffer[:end]))
        if at < 0:
            self._buffer = self._buffer[end:]
            return
        self._buffer = self._buffer[at + len(CALL_OPEN) :]
        self._state = "head"

    def _head(self, out: list[Piece]) -> None:
        match = _HEAD.match(self._buffer)
        if match is None:
            if len(self._buffer) > _MAX_HEAD:  # not a call after all: never under a grammar
                self._state, self._buffer = "between", ""
            return
        self._index += 1
        self._name = match.group(1)
        out.append(CallStarted(self._index, self._name))
        self._buffer = self._buffer[match.end() :]
        self._sent = 0
        self._state = "arguments"

    def _arguments(self, out: list[Piece]) -> None:
        if self._sent == 0:  # whitespace before the arguments is the head's, however it comes
            self._buffer = self._buffer.lstrip()
        start = 0
        while (at := self._buffer.find(CALL_CLOSE, start)) >= 0:
            arguments = _complete(self._buffer[:at])
            if arguments is not None:
                if len(arguments) > self._sent:
                    out.append(ArgumentsDelta(self._index, arguments[self._sent :]))
                finished = CallFinished(self._index, self._name, arguments)
                self.calls.append(finished)
                out.append(finished)
                self._buffer = self._buffer[at + len(CALL_CLOSE) :]
                self._state = "between"
                return
            start = at + 1  # the tag inside a string argument
        safe = _safe_arguments(self._buffer)
        if len(safe) > self._sent:
            out.append(ArgumentsDelta(self._index, safe[self._sent :]))
            self._sent = len(safe)
