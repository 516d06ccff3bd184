"""The batch: the turns that hold a sequence, and the decode step that advances them all.

Each step builds one batch from two parts: one decode token for every generating turn, then
prompt chunks of prefilling turns in lease order (or shortest first), up to `n_batch` tokens
in all. It calls llama_decode once and samples every turn that has logits in it, each with
its own sampler chain. Between steps a turn can be preempted (its KV parked or dropped, its
sequence freed) and later resumed where it stopped. Scheduler thread only.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from inference import logprobs
from inference.contexts import KvContext, KvPool
from inference.errors import Cancelled, DeadlineExceeded, InferenceError
from inference.generation import (
    Event,
    Failed,
    Finished,
    FinishReason,
    Generation,
    GenerationRequest,
    Started,
    TextDelta,
    TokenLogprobs,
)
from inference.model import LlamaModel
from inference.sampling import SamplerChain
from inference.textstream import TextStream


@dataclass(eq=False)
class Turn:
    """One request running on its leased sequence."""

    seq: int
    ctx: KvContext
    request: GenerationRequest
    gen: Generation
    chain: SamplerChain
    text: TextStream
    n_prompt: int
    n_past: int
    feed: list[int]
    prefilling: bool = True
    started: bool = False  # Started was sent
    n_gen: int = 0
    logits_at: int = -1
    leased_at: float = 0.0


@dataclass
class EngineStats:
    """Engine-internal figures. Content-free; never sent to a client."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_tokens: int = 0
    queue_depth: int = 0  # requests submitted that have no sequence yet
    slots_in_use: int = 0
    steps: int = 0
    step_seconds: float = 0.0
    last_step_seconds: float = 0.0
    turn_seconds: float = 0.0  # a turn's lease, moving average
    contexts: int = 0  # open KV contexts (sessions)
    warm: int = 0
    parked: int = 0
    dropped: int = 0
    parked_bytes: int = 0
    preemptions: int = 0


_TURN_WEIGHT = 0.2  # of the newest turn in the moving average
PrefillOrder = Literal["arrival", "shortest_first"]


def check(request: GenerationRequest, gen: Generation) -> None:
    """Raise if the request was cancelled or ran past its deadline."""
    if gen.cancelled:
        raise Cancelled("the request was cancelled")
    if time.monotonic() > request.deadline:
        raise DeadlineExceeded("the request ran past its deadline")


def _preemptible(turns: list[Turn], request: GenerationRequest) -> list[Turn]:
    """Turns that `request` may preempt: those of a lower priority class, and in its own class
    those of a client running at least two more turns than `request`'s client (so that two
    clients never take turns preempting each other)."""
    counts = Counter(turn.request.client for turn in turns)
    mine = counts[request.client]

    def fairer(turn: Turn) -> bool:
        theirs = turn.request
        if theirs.priority != request.priority:
            return theirs.priority < request.priority
        return counts[theirs.client] >= mine + 2

    return [turn for turn in turns if fairer(turn)]


class Batch:
    def __init__(
        self, model: LlamaModel, kv: KvPool, stats: EngineStats, prefill_order: PrefillOrder
    ) -> None:
        self.model = model
        self.kv = kv
        self.stats = stats
        self.prefill_order = prefill_order
        self.turns: dict[int, Turn] = {}
        self._by_client: dict[str, int] = {}

    def running(self, client: str) -> int:
        """Turns the client has in the batch now."""
        return self._by_client.get(client, 0)

    def start(self, ctx: KvContext, seq: int, request: GenerationRequest, gen: Generation) -> None:
        try:
            chain = SamplerChain(
                self.model.vocab, self.model.n_vocab, request.sampling, self.model.piece
            )
        except InferenceError as exc:
            self.kv.end_turn(ctx)
            gen.emit(Failed(exc))
            return
        prompt = list(request.prompt)
        keep = self._reusable_prefix(ctx, seq, prompt)
        self.stats.reused_tokens += keep
        turn = Turn(
            seq=seq,
            ctx=ctx,
            request=request,
            gen=gen,
            chain=chain,
            text=TextStream(request.stop),
            n_prompt=len(prompt),
            n_past=keep,
            feed=prompt[keep:],
            leased_at=time.monotonic(),
        )
        self._join(turn)

    def victim(self, request: GenerationRequest) -> Turn | None:
        """The running turn to preempt so that `request` can start, if that makes the batch
        fairer: the lowest class first, then the busiest client, then the turn leased last."""
        candidates = _preemptible(list(self.turns.values()), request)
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda t: (t.request.priority, -self.running(t.request.client), -t.leased_at),
        )

    def would_preempt(self, request: GenerationRequest) -> bool:
        """Whether `request` would find a turn to preempt now. Safe from another thread: it
        reads a copy of the batch, which may be a step old."""
        return bool(_preemptible(list(self.turns.values()), request))

    def preempt(self, turn: Turn) -> None:
        """Take a turn out between steps and free its sequence; `resume` puts it back. The
        tokens its KV holds join its feed, so that it goes on from its parked KV or, if that
        was dropped, recomputes it; its sampler chain and text stream wait with it."""
        self._leave(turn)
        turn.feed = turn.ctx.tokens + turn.feed
        turn.n_past = 0
        self.kv.preempt(turn.ctx)
        self.stats.preemptions += 1

    def resume(self, turn: Turn, seq: int) -> None:
        """Put a preempted turn back, on `seq`, which holds its restored KV or none."""
        keep = self._reusable_prefix(turn.ctx, seq, turn.feed)
        del turn.feed[:keep]
        turn.seq = seq
        turn.n_past = keep
        turn.prefilling = len(turn.feed) > 1 or not turn.started
        self._join(turn)

    def _join(self, turn: Turn) -> None:
        client = turn.request.client
        self._by_client[client] = self.running(client) + 1
        self.turns[turn.seq] = turn
        self.stats.slots_in_use = len(self.turns)

    def _leave(self, turn: Turn) -> None:
        if self.turns.get(turn.seq) is turn:  # a preempted turn's seq may be another's now
            del self.turns[turn.seq]
            client = turn.request.client
            held = self.running(client) - 1
            if held > 0:
                self._by_client[client] = held
            else:
                self._by_client.pop(client, None)
        self.stats.slots_in_use = len(self.turns)

    def _reusable_prefix(self, ctx: KvContext, seq: int, prompt: list[int]) -> int:
        """Keep the longest common prefix of this context's own KV and the new prompt."""
        cached = ctx.tokens
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

    def step(self) -> None:
        for slot in list(self.turns.values()):
            try:
                check(slot.request, slot.gen)
            except InferenceError as exc:
                self.finish(slot, Failed(exc))
        if not self.turns:
            return
        entries: list[tuple[int, int, int, bool]] = []
        fed: list[tuple[Turn, int]] = []
        for slot in self.turns.values():
            if not slot.prefilling:
                slot.logits_at = len(entries)
                entries.append((slot.seq, slot.feed[0], slot.n_past, True))
                fed.append((slot, 1))
        budget = self.model.config.n_batch - len(entries)
        waiting = [slot for slot in self.turns.values() if slot.prefilling]
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
            slot.ctx.tokens.extend(slot.feed[:n])
            slot.n_past += n
            del slot.feed[:n]
            if slot.feed:
                continue  # more prompt to prefill
            if slot.prefilling:
                slot.prefilling = False
            if not slot.started:
                slot.started = True
                self.stats.requests += 1
                self.stats.prompt_tokens += slot.n_prompt
                slot.gen.emit(Started(prompt_tokens=slot.n_prompt))
            try:
                self._sample(slot)
            except InferenceError as exc:  # this request's own dead end (its grammar's)
                self.finish(slot, Failed(exc))

    def _sample(self, slot: Turn) -> None:
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

    def _complete(self, slot: Turn, reason: FinishReason) -> None:
        tail = slot.text.finish()
        if tail:
            slot.gen.emit(TextDelta(tail))
        self.stats.completion_tokens += slot.n_gen
        self.finish(
            slot,
            Finished(reason=reason, prompt_tokens=slot.n_prompt, completion_tokens=slot.n_gen),
        )

    def finish(self, slot: Turn, event: Event) -> None:
        self._leave(slot)
        turn = time.monotonic() - slot.leased_at
        avg = self.stats.turn_seconds
        self.stats.turn_seconds = turn if avg == 0 else avg + _TURN_WEIGHT * (turn - avg)
        self.kv.end_turn(slot.ctx)
        slot.chain.close()
        slot.gen.emit(event)

    def fail_all(self, error: InferenceError) -> None:
        for slot in list(self.turns.values()):
            self.kv.clear(slot.ctx)
            self.finish(slot, Failed(error))
