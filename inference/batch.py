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
from inference.lookup import LookupConfig, NgramIndex
from inference.model import LlamaModel
from inference.sampling import SamplerChain
from inference.textstream import TextStream
from inference.turn import EngineStats, Turn

_TURN_WEIGHT = 0.2  # of the newest turn in the moving average
_MOVES_PER_STEP = 2  # compaction moves before one step, at most
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
        self,
        model: LlamaModel,
        kv: KvPool,
        stats: EngineStats,
        prefill_order: PrefillOrder,
        lookup: LookupConfig | None = None,
    ) -> None:
        self.model = model
        self.lookup = lookup or LookupConfig(max_draft=0)
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
        self.stats.last_step_seconds = 0.0
        for slot in list(self.turns.values()):
            try:
                check(slot.request, slot.gen)
            except InferenceError as exc:
                self.finish(slot, Failed(exc))
        if not self.turns:
            return
        self._compact()
        self.stats.steps += 1
        generating = [slot for slot in self.turns.values() if not slot.prefilling]
        budget = self.model.config.n_batch
        if generating:
            budget -= self._decode_step(generating)
        waiting = [slot for slot in self.turns.values() if slot.prefilling]
        if self.prefill_order == "shortest_first":
            waiting.sort(key=lambda slot: len(slot.feed))
        for slot in waiting:
            if budget <= 0:
                break
            budget -= self._prefill(slot)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        started = time.perf_counter()
        self.model.decode_batch(entries)
        elapsed = time.perf_counter() - started
        self.stats.step_seconds += elapsed
        self.stats.last_step_seconds += elapsed

    def _decode_step(self, generating: list[Turn]) -> int:
        """One call for every generating turn's next token (and its draft), in sequence
        order, so that consecutive sequences share a micro-batch; then each is sampled, before
        another call overwrites the logits. The tokens decoded, drafts included."""
        entries: list[tuple[int, int, int, bool]] = []
        budget = self.model.config.n_batch - len(generating)
        drafting = len(generating) <= self.lookup.max_turns
        for slot in sorted(generating, key=lambda slot: slot.seq):
            slot.logits_at = len(entries)
            entries.append((slot.seq, slot.feed[0], slot.n_past, True))
            slot.drafted = self._draft(slot, budget) if drafting else []
            for i, token in enumerate(slot.drafted, 1):
                entries.append((slot.seq, token, slot.n_past + i, True))
            budget -= len(slot.drafted)
        self._decode(entries)
        for slot in generating:
            self._fed(slot, 1)
        return len(entries)

    def _prefill(self, slot: Turn) -> int:
        """One chunk of a turn's prompt, in a call of its own and cut at `n_batch` from where
        its prefill began: how a prompt is split never depends on other sessions' requests.
        (llama.cpp's kernels round differently for different splits of a prompt, and greedy
        text can follow the rounding.)"""
        chunk = slot.feed[: self.model.config.n_batch]
        done = len(chunk) == len(slot.feed)
        last = len(chunk) - 1
        self._decode(
            [(slot.seq, t, slot.n_past + i, done and i == last) for i, t in enumerate(chunk)]
        )
        slot.logits_at = last if done else -1
        self._fed(slot, len(chunk))
        return len(chunk)

    def _fed(self, slot: Turn, n: int) -> None:
        """`n` tokens of the turn's feed are in its KV now; sample it if its prompt is done."""
        slot.ctx.tokens.extend(slot.feed[:n])
        slot.n_past += n
        del slot.feed[:n]
        if slot.feed:
            return  # more prompt to prefill
        if slot.prefilling:
            slot.prefilling = False
            if self.lookup.max_draft > 0 and slot.lookup is None:
                slot.lookup = NgramIndex(self.lookup, slot.ctx.tokens)
        if not slot.started:
            slot.started = True
            self.stats.requests += 1
            self.stats.prompt_tokens += slot.n_prompt
            slot.gen.emit(Started(prompt_tokens=slot.n_prompt))
        try:
            self._sample(slot)
        except InferenceError as exc:  # this request's own dead end (its grammar's)
            self.finish(slot, Failed(exc))

    def _compact(self) -> None:
        """Keep the running turns on consecutive sequence ids, moving a few turns' own KV into
        free sequences when they are not: with a KV stream per sequence, llama.cpp decodes
        each run of consecutive ids as a micro-batch of its own, each costing about a whole
        single-token step, while a move copies one context's cells once."""
        for seq, to in self.kv.compaction(_MOVES_PER_STEP):
            turn = self.turns.get(seq)
            if turn is None or not self.kv.move(turn.ctx, to):
                continue
            del self.turns[seq]
            turn.seq = to
            self.turns[to] = turn

    def _draft(self, slot: Turn, budget: int) -> list[int]:
        """Prompt-lookup draft tokens to decode after the turn's next token, within the batch's
        room, the session's context and the completion limit."""
        if slot.lookup is None:
            return []
        room = min(
            budget,
            self.model.n_ctx_per_seq - slot.n_past - 1,
            slot.request.max_tokens - slot.n_gen - 1,
        )
        return slot.lookup.draft()[: max(0, room)]

    def _sample(self, slot: Turn) -> None:
        """Sample the turn's next token, then each drafted token's successor for as long as
        the sampler confirms the draft; the refused rest of the draft leaves the KV."""
        drafted, slot.drafted = slot.drafted, []
        kept = 0
        try:
            for i in range(len(drafted) + 1):
                token, end = self._take(slot, slot.logits_at + i)
                if end is not None or i == len(drafted) or token != drafted[i]:
                    break
                slot.ctx.tokens.append(token)  # its drafted cell holds exactly this token
                slot.n_past += 1
                kept += 1
        finally:
            if kept < len(drafted):
                self.model.forget(slot.seq, slot.n_past)
        if drafted:
            self.stats.drafted_tokens += len(drafted)
            self.stats.accepted_tokens += kept
            assert slot.lookup is not None
            slot.lookup.accepted(len(drafted), kept)
        if end is not None:
            self._complete(slot, end)
        else:
            slot.feed = [token]

    def _take(self, slot: Turn, index: int) -> tuple[int, FinishReason | None]:
        """Sample the token at batch entry `index`, and whether the turn ends on it."""
        model = self.model
        token = slot.chain.sample(model.ctx, index)
        if model.is_eog(token):
            return token, "stop"
        slot.n_gen += 1
        if slot.request.logprobs is not None:
            logits = model.logits(index)
            entry = logprobs.entry(logits, token, slot.request.logprobs, model.piece)
            slot.gen.emit(TokenLogprobs(entry))
        delta = slot.text.push(model.piece(token))
        if delta:
            slot.gen.emit(TextDelta(delta))
        if slot.text.stopped:
            return token, "stop"
        if slot.n_gen >= slot.request.max_tokens or slot.n_past >= model.n_ctx_per_seq:
            return token, "length"
        if slot.lookup is not None:
            slot.lookup.extend((token,))
        return token, None

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
