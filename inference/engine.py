"""The inference engine: one model, one scheduler thread, continuous batching over sequences.

Each step the scheduler builds one batch from two parts: one decode token for every
generating request, then prompt chunks of admitted requests in arrival order, up to
`n_batch` tokens in all. It calls llama_decode once per step and samples every request
that has logits in it, each with its own sampler chain.

Invariants:
- Only the scheduler thread touches the llama.cpp context, so the asyncio loop never blocks.
- Requests are admitted in arrival order; their prompts are prefilled in arrival order, or
  shortest first when so configured.
- A sequence id belongs to one owner from `acquire_sequence` until `release_sequence`, which
  stops any request on it and removes its KV cells before the id is handed out again.
  Nothing is shared between sequences: a request re-uses only the KV prefix its own
  sequence already holds.
- Cancellation and deadlines are checked before every step, so a cancelled request leaves
  the batch within one step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from inference import logprobs
from inference.errors import (
    Cancelled,
    ContextOverflow,
    DeadlineExceeded,
    EngineStopped,
    InferenceError,
    NoFreeSequence,
)
from inference.generation import (
    Event,
    Failed,
    Finished,
    FinishReason,
    Generation,
    GenerationRequest,
    SequenceHandle,
    Started,
    TextDelta,
    TokenLogprobs,
)
from inference.model import LlamaModel
from inference.sampling import SamplerChain
from inference.textstream import TextStream

__all__ = [
    "Engine",
    "EngineStats",
    "Event",
    "Failed",
    "Finished",
    "Generation",
    "GenerationRequest",
    "SequenceHandle",
    "Started",
    "TextDelta",
    "TokenLogprobs",
]

log = logging.getLogger("keep.inference")

T = TypeVar("T")
PrefillOrder = Literal["arrival", "shortest_first"]


class _Stop:
    pass


@dataclass(eq=False)
class _Admit:
    seq: int
    request: GenerationRequest
    gen: Generation


_Job = Callable[[], None] | _Stop | _Admit


@dataclass(eq=False)
class _Slot:
    """One running request on its sequence."""

    seq: int
    request: GenerationRequest
    gen: Generation
    chain: SamplerChain
    text: TextStream
    n_prompt: int
    n_past: int
    feed: list[int]
    prefilling: bool = True
    n_gen: int = 0
    logits_at: int = -1


@dataclass
class EngineStats:
    """Engine-internal figures. Content-free; never sent to a client."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_tokens: int = 0
    queue_depth: int = 0
    slots_in_use: int = 0
    steps: int = 0
    step_seconds: float = 0.0
    last_step_seconds: float = 0.0


class Engine:
    def __init__(self, model: LlamaModel, *, prefill_order: PrefillOrder = "arrival") -> None:
        self.model = model
        self.prefill_order = prefill_order
        self.stats = EngineStats()
        self._free = list(range(model.n_seq_max))
        self._pool = threading.Lock()
        self._kv_tokens: dict[int, list[int]] = {s: [] for s in range(model.n_seq_max)}
        self._slots: dict[int, _Slot] = {}
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
        """Stop any request on the sequence, remove its KV cells, and return its id."""

        def release() -> None:
            slot = self._slots.get(seq.id)
            if slot is not None:
                self._finish(slot, Failed(Cancelled("the request was cancelled")))
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

    def active_slots(self) -> concurrent.futures.Future[int]:
        """How many requests are in the batch (prefilling or generating)."""
        return self.call(lambda: len(self._slots))

    # Work

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `fn` on the scheduler thread, between steps, after every job queued before it.

        `fn` runs even if the caller stops waiting (cancelling the future): a release must
        happen whether or not anyone is still there to see it.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            waited = future.set_running_or_notify_cancel()
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                if waited:
                    future.set_exception(exc)
                return
            if waited:
                future.set_result(result)

        self._put(job)
        return future

    def submit(self, seq: SequenceHandle, request: GenerationRequest) -> Generation:
        if len(request.prompt) == 0:
            raise ValueError("an empty prompt cannot be decoded")
        generation = Generation(asyncio.get_running_loop())
        self.stats.queue_depth += 1
        self._put(_Admit(seq.id, request, generation))
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

    # The scheduler thread.

    def _run(self) -> None:
        while True:
            try:
                if not self._take_jobs():
                    break
                if self._slots:
                    self._step()
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the scheduler
                # Type only: an exception's text may quote a request.
                log.error("inference step failed: %s", type(exc).__name__)
                self._fail_all(InferenceError("generation failed"))
        self._fail_all(EngineStopped("the engine stopped"))

    def _take_jobs(self) -> bool:
        """Run queued jobs; wait for one only when nothing is running. False on stop."""
        block = not self._slots
        while True:
            try:
                job = self._jobs.get(block=block)
            except queue.Empty:
                return True
            block = False
            if isinstance(job, _Stop):
                return False
            if isinstance(job, _Admit):
                self._admit(job)
            else:
                job()

    def _admit(self, job: _Admit) -> None:
        self.stats.queue_depth -= 1
        request, gen = job.request, job.gen
        try:
            self._check(request, gen)
            prompt = list(request.prompt)
            if len(prompt) + request.max_tokens > self.model.n_ctx_per_seq:
                raise ContextOverflow("the prompt and completion exceed the session's context")
            if job.seq in self._slots:
                raise InferenceError("the sequence is already running a request")
            chain = SamplerChain(
                self.model.vocab, self.model.n_vocab, request.sampling, self.model.piece
            )
        except InferenceError as exc:
            gen.emit(Failed(exc))
            return
        keep = self._reusable_prefix(job.seq, prompt)
        self.stats.reused_tokens += keep
        self._slots[job.seq] = _Slot(
            seq=job.seq,
            request=request,
            gen=gen,
            chain=chain,
            text=TextStream(request.stop),
            n_prompt=len(prompt),
            n_past=keep,
            feed=prompt[keep:],
        )
        self.stats.slots_in_use = len(self._slots)

    def _reusable_prefix(self, seq: int, prompt: list[int]) -> int:
        """Keep the longest common prefix of this sequence's own KV and the new prompt."""
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
        return keep

    @staticmethod
    def _check(request: GenerationRequest, gen: Generation) -> None:
        if gen.cancelled:
            raise Cancelled("the request was cancelled")
        if time.monotonic() > request.deadline:
            raise DeadlineExceeded("the request ran past its deadline")

    def _step(self) -> None:
        for slot in list(self._slots.values()):
            try:
                self._check(slot.request, slot.gen)
            except InferenceError as exc:
                self._finish(slot, Failed(exc))
        if not self._slots:
            return
        entries: list[tuple[int, int, int, bool]] = []
        fed: list[tuple[_Slot, int]] = []
        for slot in self._slots.values():
            if not slot.prefilling:
                slot.logits_at = len(entries)
                entries.append((slot.seq, slot.feed[0], slot.n_past, True))
                fed.append((slot, 1))
        budget = self.model.config.n_batch - len(entries)
        waiting = [slot for slot in self._slots.values() if slot.prefilling]
        if self.prefill_order == "shortest_first":
            waiting.sort(key=lambda slot: len(slot.feed))
        for slot in waiting:
            if budget <= 0:
                break
            chunk = slot.feed[:budget]
            done = len(chunk) == len(slot.feed)
            for i, token in enumerate(chunk):
                entries.append((slot.seq, token, slot.n_past + i, done and i == len(chunk) - 1))
            slot.logits_at = len(entries) - 1 if done else -1
            fed.append((slot, len(chunk)))
            budget -= len(chunk)
        started = time.perf_counter()
        self.model.decode_batch(entries)
        elapsed = time.perf_counter() - started
        self.stats.steps += 1
        self.stats.step_seconds += elapsed
        self.stats.last_step_seconds = elapsed
        for slot, n in fed:
            self._kv_tokens[slot.seq].extend(slot.feed[:n])
            slot.n_past += n
            del slot.feed[:n]
            if slot.feed:
                continue  # more prompt to prefill
            if slot.prefilling:
                slot.prefilling = False
                self.stats.requests += 1
                self.stats.prompt_tokens += slot.n_prompt
                slot.gen.emit(Started(prompt_tokens=slot.n_prompt))
            try:
                self._sample(slot)
            except InferenceError as exc:  # this request's own dead end (its grammar's)
                self._finish(slot, Failed(exc))

    def _sample(self, slot: _Slot) -> None:
        model = self.model
        token = slot.chain.sample(model.ctx, slot.logits_at)
        if model.is_eog(token):
            self._complete(slot, "stop")
            return
        slot.n_gen += 1
        if slot.request.logprobs is not None:
            logits = model.logits(slot.logits_at)
            entry = logprobs.entry(logits, token, slot.request.logprobs, model.piece)
            slot.gen.emit(TokenLogprobs(entry))
        delta = slot.text.push(model.piece(token))
        if delta:
            slot.gen.emit(TextDelta(delta))
        if slot.text.stopped:
            self._complete(slot, "stop")
        elif slot.n_gen >= slot.request.max_tokens or slot.n_past >= model.n_ctx_per_seq:
            self._complete(slot, "length")
        else:
            slot.feed = [token]

    def _complete(self, slot: _Slot, reason: FinishReason) -> None:
        tail = slot.text.finish()
        if tail:
            slot.gen.emit(TextDelta(tail))
        self.stats.completion_tokens += slot.n_gen
        self._finish(
            slot,
            Finished(reason=reason, prompt_tokens=slot.n_prompt, completion_tokens=slot.n_gen),
        )

    def _finish(self, slot: _Slot, event: Event) -> None:
        self._slots.pop(slot.seq, None)
        self.stats.slots_in_use = len(self._slots)
        slot.chain.close()
        slot.gen.emit(event)

    def _fail_all(self, error: InferenceError) -> None:
        for slot in list(self._slots.values()):
            self.model.forget(slot.seq)
            self._kv_tokens[slot.seq] = []
            self._finish(slot, Failed(error))
