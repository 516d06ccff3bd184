"""What a consumer of the engine sees: a request, and the events of its generation, delivered
on the asyncio loop that submitted it.

A generation's events are `Started` once the prompt is in the KV cache, then `TextDelta`s,
then exactly one `Finished` or `Failed`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from inference.errors import InferenceError
from inference.logprobs import TokenLogprob
from inference.sampling import SamplingParams

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    prompt: Sequence[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: Sequence[str] = ()
    deadline: float = float("inf")  # time.monotonic() value
    # None: no log-probabilities. n >= 0: each token's, with its n most likely alternatives.
    logprobs: int | None = None
    # Whose turn it is in the waiting line (appliance.shares.client_of), and its class there:
    # higher classes are served first, clients of one class take turns.
    client: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Started:
    prompt_tokens: int


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class TokenLogprobs:
    """A sampled token's log-probability, sent before the text it produces (which may come
    later, joined with other tokens' text, or never, when a stop string swallows it)."""

    entry: TokenLogprob


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: InferenceError


Event = Started | TokenLogprobs | TextDelta | Finished | Failed


class Generation:
    """The consumer's side of one request: events arrive on the asyncio loop that made it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._cancelled = threading.Event()
        self.done = False

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def emit(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:
            self._cancelled.set()  # the consumer's loop is gone

    async def next_event(self) -> Event:
        event = await self._events.get()
        if isinstance(event, Finished | Failed):
            self.done = True
        return event

    async def __aiter__(self) -> AsyncIterator[Event]:
        while not self.done:
            yield await self.next_event()
