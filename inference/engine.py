"""The inference engine: one model, one scheduler thread, continuous batching over sequences.

Sessions own KV contexts (inference.contexts), not sequences. A request names its context;
it waits in a fair line (inference.admission) until a sequence can be leased for it, runs its
turn there, and leaves its KV warm in that sequence until another turn needs the sequence.

Each step the scheduler builds one batch from two parts: one decode token for every
generating request, then prompt chunks of admitted requests in lease order, up to `n_batch`
tokens in all. It calls llama_decode once per step and samples every request that has
logits in it, each with its own sampler chain.

Invariants:
- Only the scheduler thread touches the llama.cpp context, so the asyncio loop never blocks.
- A sequence holds one context's cells at a time. A request re-uses only the KV prefix its
  own context holds, warm or restored from its own parked bytes; nothing is shared between
  contexts.
- `release` stops any request of the context, takes its queued ones out, and frees its
  sequence and parked bytes before the sequence is leased again.
- A turn is preempted only for a request of a higher class, or of a client running at
  least two fewer turns; it goes back to the front of its client's line and resumes from
  its own parked KV (or recomputes it, if that was dropped).
- Cancellation and deadlines are checked before every step, for running and waiting requests
  alike, so a cancelled request leaves the batch or the line within one step.
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
from typing import TypeVar

from inference.admission import FairQueue
from inference.batch import Batch, PrefillOrder, check
from inference.contexts import Eviction, KvContext, KvPool
from inference.errors import Cancelled, ContextOverflow, EngineStopped, InferenceError, QueueFull
from inference.generation import (
    Event,
    Failed,
    Finished,
    Generation,
    GenerationRequest,
    Started,
    TextDelta,
    TokenLogprobs,
)
from inference.lookup import LookupConfig
from inference.model import LlamaModel
from inference.turn import EngineStats, Turn

__all__ = [
    "Engine",
    "EngineStats",
    "Event",
    "Failed",
    "Finished",
    "Generation",
    "GenerationRequest",
    "KvContext",
    "Started",
    "TextDelta",
    "TokenLogprobs",
]

log = logging.getLogger("keep.inference")

T = TypeVar("T")


class _Stop:
    pass


@dataclass(eq=False)
class _Admit:
    ctx: KvContext
    request: GenerationRequest
    gen: Generation
    turn: Turn | None = None  # a preempted turn, waiting to go on


_Job = Callable[[], None] | _Stop | _Admit


class Engine:
    def __init__(
        self,
        model: LlamaModel,
        *,
        prefill_order: PrefillOrder = "arrival",
        park_budget_bytes: int = 1 << 30,
        eviction: Eviction = "park",
        preempt: bool = True,
        lookup: LookupConfig | None = None,
    ) -> None:
        self.model = model
        self.preempt = preempt
        self.stats = EngineStats()
        self.kv = KvPool(model, park_budget_bytes=park_budget_bytes, eviction=eviction)
        self._lock = threading.Lock()
        self._contexts: set[KvContext] = set()
        self._line: FairQueue[_Admit] = FairQueue()
        self._batch = Batch(model, self.kv, self.stats, prefill_order, lookup)
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._closed = False
        # Told each step's decode seconds, on the scheduler thread (the metrics listen here).
        self.on_step: Callable[[float], None] | None = None
        self._worker = threading.Thread(target=self._run, name="keep-inference", daemon=True)
        self._worker.start()

    # Contexts

    def open_context(self) -> KvContext:
        """A new, empty KV context for a session. It holds no sequence until a turn runs."""
        with self._lock:
            if self._closed:
                raise EngineStopped("the engine is closed")
            ctx = KvContext()
            self._contexts.add(ctx)
            self.stats.contexts = len(self._contexts)
            return ctx

    def release(self, ctx: KvContext) -> concurrent.futures.Future[None]:
        """Stop the context's request, take its waiting ones out of the line, and free its
        sequence and parked bytes."""

        def release() -> None:
            for turn in [t for t in self._batch.turns.values() if t.ctx is ctx]:
                self._batch.finish(turn, Failed(Cancelled("the request was cancelled")))
            for job in self._line.remove_where(lambda job: job.ctx is ctx):
                self._unqueue(job, Cancelled("the request was cancelled"))
            self.kv.release(ctx)
            with self._lock:
                self._contexts.discard(ctx)
                self.stats.contexts = len(self._contexts)
            self._count()

        return self.call(release)

    @property
    def free_sequences(self) -> int:
        """Sequences that hold no context's cells."""
        return self.kv.free_sequences

    def live_sequences(self) -> concurrent.futures.Future[int]:
        """How many sequences hold KV cells, as llama.cpp's memory reports it."""
        n = self.model.n_seq_max
        return self.call(lambda: sum(1 for s in range(n) if self.model.seq_pos_max(s) >= 0))

    def active_slots(self) -> concurrent.futures.Future[int]:
        """How many requests are in the batch (prefilling or generating)."""
        return self.call(lambda: len(self._batch.turns))

    @property
    def waiting(self) -> int:
        """Requests in the waiting line: submitted, and more than the sequences not running
        a turn could take at once."""
        return max(0, self._beyond_idle(0))

    def line_full(self, max_waiting: int) -> bool:
        """Whether one more request would find `max_waiting` others already waiting."""
        return self._beyond_idle(1) > max_waiting

    def _beyond_idle(self, extra: int) -> int:
        idle = self.model.n_seq_max - self.stats.slots_in_use
        return self.stats.queue_depth + extra - idle

    def expected_wait_s(self, request: GenerationRequest | None = None) -> float:
        """A rough wait for a request submitted now: turns ahead of it per sequence, or none
        when it would preempt a running turn (read from the scheduler's counts unlocked: a
        snapshot good enough for an estimate)."""
        ahead = self._beyond_idle(1)
        if ahead <= 0 or (
            request is not None and self.preempt and self._batch.would_preempt(request)
        ):
            return 0.0
        return ahead / self.model.n_seq_max * self.stats.turn_seconds

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

    def submit(
        self, ctx: KvContext, request: GenerationRequest, *, max_waiting: int | None = None
    ) -> Generation:
        """Queue a turn for `ctx`. With `max_waiting`, refuse with QueueFull when that many
        requests already wait for a sequence."""
        if len(request.prompt) == 0:
            raise ValueError("an empty prompt cannot be decoded")
        generation = Generation(asyncio.get_running_loop())
        with self._lock:
            if max_waiting is not None and self.line_full(max_waiting):
                raise QueueFull("every KV sequence is busy and the waiting line is full")
            self.stats.queue_depth += 1
        try:
            self._put(_Admit(ctx, request, generation))
        except BaseException:
            with self._lock:
                self.stats.queue_depth -= 1
            raise
        return generation

    def _put(self, job: _Job) -> None:
        if self._closed or not self._worker.is_alive():
            raise EngineStopped("the engine is not running")
        self._jobs.put(job)

    def close(self) -> None:
        with self._lock:
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
                if self._line:
                    self._schedule()
                if self._batch.turns:
                    self._batch.step()
                    if self.on_step is not None and self.stats.last_step_seconds > 0:
                        self.on_step(self.stats.last_step_seconds)
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the scheduler
                # Type only: an exception's text may quote a request.
                log.error("inference step failed: %s", type(exc).__name__)
                self._fail_all(InferenceError("generation failed"))
        self._fail_all(EngineStopped("the engine stopped"))

    def _take_jobs(self) -> bool:
        """Run queued jobs; wait for one only when nothing is running. False on stop."""
        block = not self._batch.turns
        while True:
            try:
                # Requests waiting with nothing running can only be waiting for a release.
                job = self._jobs.get(block=block, timeout=0.05 if self._line else None)
            except queue.Empty:
                return True
            block = False
            if isinstance(job, _Stop):
                return False
            if isinstance(job, _Admit):
                self._enqueue(job)
            else:
                job()

    def _enqueue(self, job: _Admit) -> None:
        request = job.request
        try:
            check(request, job.gen)
            if len(request.prompt) + request.max_tokens > self.model.n_ctx_per_seq:
                raise ContextOverflow("the prompt and completion exceed the session's context")
            if job.ctx.closed:
                raise Cancelled("the session has ended")
        except InferenceError as exc:
            self._unqueue(job, exc)
            return
        self._line.push(job, client=request.client, priority=request.priority)

    def _unqueue(self, job: _Admit, error: InferenceError) -> None:
        """A request leaves the line without a sequence."""
        with self._lock:
            self.stats.queue_depth -= 1
        if job.turn is not None:  # its KV stays parked (or dropped) in its own context
            self.kv.end_turn(job.ctx)
            job.turn.chain.close()
        job.gen.emit(Failed(error))

    def _schedule(self) -> None:
        """Drop waiting requests that were cancelled or ran out of time, then lease sequences
        to the rest in the line's order, as long as sequences can be had."""
        for gone in self._line.remove_where(self._expired):
            try:
                check(gone.request, gone.gen)
            except InferenceError as exc:
                self._unqueue(gone, exc)
        running = self._batch.running
        while (job := self._line.peek(running)) is not None:
            if job.ctx.closed or (job.ctx.running and job.turn is None):
                self._line.pop(running)
                self._unqueue(
                    job,
                    Cancelled("the session has ended")
                    if job.ctx.closed
                    else InferenceError("the session is already running a request"),
                )
                continue
            seq = self.kv.lease(job.ctx)
            victim = None
            if seq is None and self.preempt:
                victim = self._batch.victim(job.request)
            if seq is None and victim is None:
                break
            self._line.pop(running)  # `job`: nothing has changed since the peek
            if victim is not None:
                self._batch.preempt(victim)
                seq = self.kv.lease(job.ctx)
            assert seq is not None  # the preempted turn's sequence is free
            with self._lock:
                self.stats.queue_depth -= 1
            if job.turn is None:
                self._batch.start(job.ctx, seq, job.request, job.gen)
            else:
                self._batch.resume(job.turn, seq)
            if victim is not None:
                with self._lock:
                    self.stats.queue_depth += 1
                again = _Admit(victim.ctx, victim.request, victim.gen, victim)
                self._line.push_front(
                    again, client=victim.request.client, priority=victim.request.priority
                )
        self._count()

    @staticmethod
    def _expired(job: _Admit) -> bool:
        return job.gen.cancelled or time.monotonic() > job.request.deadline

    def _count(self) -> None:
        stats, kv = self.stats, self.kv
        stats.warm = kv.warm
        stats.parked = kv.parked
        stats.parked_bytes = kv.stats.parked_bytes
        stats.dropped = kv.dropped

    def _fail_all(self, error: InferenceError) -> None:
        self._batch.fail_all(error)
        while self._line:
            self._unqueue(self._line.pop(), error)
