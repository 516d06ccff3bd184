"""The inference engine: one model, one worker thread, one KV sequence per session.

Invariants:
- Only the worker thread touches the llama.cpp context, so the asyncio loop never blocks.
- Jobs run in arrival order (a FIFO queue); this engine decodes one request at a time.
- A sequence id belongs to one owner from `acquire_sequence` until `release_sequence`, which
  removes its KV cells before the id can be handed out again. Nothing is shared between
  sequences: a request re-uses only the KV prefix its own sequence already holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from inference.errors import (
    Cancelled,
    ContextOverflow,
    DeadlineExceeded,
    EngineStopped,
    InferenceError,
    NoFreeSequence,
)
from inference.model import LlamaModel
from inference.sampling import SamplerChain, SamplingParams
from inference.textstream import TextStream

log = logging.getLogger("keep.inference")

T = TypeVar("T")
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SequenceHandle:
    id: int


@dataclass(frozen=True)
class GenerationRequest:
    prompt: Sequence[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: Sequence[str] = ()
    deadline: float = float("inf")  # time.monotonic() value


@dataclass(frozen=True)
class Started:
    prompt_tokens: int


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: InferenceError


Event = Started | TextDelta | Finished | Failed


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


class _Stop:
    pass


_Job = Callable[[], None] | _Stop


@dataclass
class EngineStats:
    """Engine-internal figures. Content-free; never sent to a client."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_tokens: int = 0
    queue_depth: int = 0


class Engine:
    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self.stats = EngineStats()
        self._free = list(range(model.n_seq_max))
        self._pool = threading.Lock()
        self._kv_tokens: dict[int, list[int]] = {s: [] for s in range(model.n_seq_max)}
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="keep-inference", daemon=True)
        self._worker.start()

    # Sequences

    def acquire_sequence(self) -> SequenceHandle:
        with self._pool:
            if self._closed:
                raise EngineStopped("the engine is closed")
            if not self._free:
                raise NoFreeSequence("every KV sequence is in use")
            return SequenceHandle(self._free.pop(0))

    def release_sequence(self, seq: SequenceHandle) -> concurrent.futures.Future[None]:
        """Remove the sequence's KV cells (on the worker), then return its id to the pool."""

        def release() -> None:
            self.model.forget(seq.id)
            self._kv_tokens[seq.id] = []
            with self._pool:
                self._free.append(seq.id)

        return self.call(release)

    @property
    def free_sequences(self) -> int:
        with self._pool:
            return len(self._free)

    def live_sequences(self) -> concurrent.futures.Future[int]:
        """How many sequences hold KV cells, as llama.cpp's memory reports it."""
        n = self.model.n_seq_max
        return self.call(lambda: sum(1 for s in range(n) if self.model.seq_pos_max(s) >= 0))

    # Work

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `fn` on the worker thread, after every job queued before it."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

        self._put(job)
        return future

    def submit(self, seq: SequenceHandle, request: GenerationRequest) -> Generation:
        generation = Generation(asyncio.get_running_loop())
        if len(request.prompt) == 0:
            raise ValueError("an empty prompt cannot be decoded")
        self.stats.queue_depth += 1
        self._put(lambda: self._generate(seq.id, request, generation))
        return generation

    def _put(self, job: _Job) -> None:
        if self._closed or not self._worker.is_alive():
            raise EngineStopped("the engine is not running")
        self._jobs.put(job)

    def close(self) -> None:
        with self._pool:
            if self._closed:
                return
            self._closed = True
        self._jobs.put(_Stop())
        self._worker.join()
        self.model.close()

    @property
    def alive(self) -> bool:
        return not self._closed and self._worker.is_alive()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if isinstance(job, _Stop):
                return
            try:
                job()
            except Exception:
                # A job must report its own failure; this is a bug guard, logged without
                # content (exception type only).
                log.exception("inference job failed unexpectedly")

    # The generation loop, on the worker thread.

    def _generate(self, seq: int, request: GenerationRequest, gen: Generation) -> None:
        self.stats.queue_depth -= 1
        try:
            self._generate_inner(seq, request, gen)
        except InferenceError as exc:
            gen.emit(Failed(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the worker
            log.error("generation failed: %s", type(exc).__name__)
            self.model.forget(seq)
            self._kv_tokens[seq] = []
            gen.emit(Failed(InferenceError("generation failed")))

    @staticmethod
    def _check(request: GenerationRequest, gen: Generation) -> None:
        if gen.cancelled:
            raise Cancelled("the request was cancelled")
        if time.monotonic() > request.deadline:
            raise DeadlineExceeded("the request ran past its deadline")

    def _generate_inner(self, seq: int, request: GenerationRequest, gen: Generation) -> None:
        model = self.model
        self._check(request, gen)
        prompt = list(request.prompt)
        if len(prompt) + request.max_tokens > model.n_ctx_per_seq:
            raise ContextOverflow("the prompt and completion exceed the session's context")
        chain = SamplerChain(model.vocab, model.n_vocab, request.sampling)
        try:
            pos = self._prefill(seq, prompt, request, gen)
            self.stats.requests += 1
            self.stats.prompt_tokens += len(prompt)
            gen.emit(Started(prompt_tokens=len(prompt)))
            self._decode_loop(seq, pos, chain, request, gen, len(prompt))
        finally:
            chain.close()

    def _prefill(
        self, seq: int, prompt: list[int], request: GenerationRequest, gen: Generation
    ) -> int:
        cached = self._kv_tokens[seq]
        keep = 0
        for a, b in zip(cached, prompt, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(prompt) - 1)  # the last prompt token is decoded for its logits
        if keep < len(cached) and not self.model.forget(seq, keep):
            self.model.forget(seq)
            keep = 0
        del cached[keep:]
        self.stats.reused_tokens += keep
        n_batch = self.model.config.n_batch
        for start in range(keep, len(prompt), n_batch):
            self._check(request, gen)
            chunk = prompt[start : start + n_batch]
            last = start + len(chunk) == len(prompt)
            self.model.decode(seq, chunk, start, want_logits=last)
            cached.extend(chunk)
        return len(prompt)

    def _decode_loop(
        self,
        seq: int,
        pos: int,
        chain: SamplerChain,
        request: GenerationRequest,
        gen: Generation,
        n_prompt: int,
    ) -> None:
        model = self.model
        cached = self._kv_tokens[seq]
        text = TextStream(request.stop)
        n_gen = 0
        reason: FinishReason = "length"
        while n_gen < request.max_tokens:
            token = chain.sample(model.ctx, -1)
            if model.is_eog(token):
                reason = "stop"
                break
            n_gen += 1
            delta = text.push(model.piece(token))
            if delta:
                gen.emit(TextDelta(delta))
            if text.stopped:
                reason = "stop"
                break
            if n_gen >= request.max_tokens or pos >= model.n_ctx_per_seq:
                break
            self._check(request, gen)
            model.decode(seq, [token], pos, want_logits=True)
            cached.append(token)
            pos += 1
        tail = text.finish()
        if tail:
            gen.emit(TextDelta(tail))
        self.stats.completion_tokens += n_gen
        gen.emit(Finished(reason=reason, prompt_tokens=n_prompt, completion_tokens=n_gen))
