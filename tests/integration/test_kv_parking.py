"""Sessions beyond slots, on the real SmolLM2 GGUF: idle KV parked in the session's own RAM
or dropped, restored only into its own turn, and the same greedy text either way."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from appliance.app import load_engine
from inference.contexts import Eviction
from inference.engine import Engine, Failed, Finished, GenerationRequest, KvContext, TextDelta
from inference.template import ChatMessage
from tests.conftest import make_settings
from tests.integration.test_engine import GREEDY, drain, prompt_for

QUESTION = "Name three colours."
FOLLOW_UP = "Now name three animals."


@pytest.fixture(scope="module")
def two_slots() -> Iterator[Engine]:
    """An engine of its own with two sequences, so that a third session evicts the first."""
    engine = load_engine(make_settings(slots=2, kv_park_bytes=256 << 20))
    yield engine
    engine.close()


def conversation(engine: Engine, answer: str | None) -> list[int]:
    template = engine.model.template
    assert template is not None
    messages = [ChatMessage("user", QUESTION)]
    if answer is not None:
        messages += [ChatMessage("assistant", answer), ChatMessage("user", FOLLOW_UP)]
    return engine.model.tokenize_prompt(template.render(messages))


async def turn(engine: Engine, ctx: KvContext, prompt: list[int], max_tokens: int = 24) -> str:
    text, final = await drain(engine.submit(ctx, GenerationRequest(prompt, max_tokens, GREEDY)))
    assert isinstance(final, Finished), final
    return text


async def crowd_out(engine: Engine) -> None:
    """Two other sessions' turns, so that every sequence has been leased since."""
    others = [engine.open_context() for _ in range(engine.model.n_seq_max)]
    for ctx in others:
        await turn(engine, ctx, prompt_for(engine, "Count to five."), 8)
    for ctx in others:
        await asyncio.wrap_future(engine.release(ctx))


def test_a_parked_session_answers_exactly_as_one_that_never_parked(two_slots: Engine) -> None:
    engine = two_slots

    async def scenario() -> None:
        warm, parked = engine.open_context(), engine.open_context()
        first_warm = await turn(engine, warm, conversation(engine, None))
        second_warm = await turn(engine, warm, conversation(engine, first_warm))
        await asyncio.wrap_future(engine.release(warm))

        first = await turn(engine, parked, conversation(engine, None))
        assert first == first_warm
        await crowd_out(engine)
        assert parked.state == "parked"
        state = parked.parked
        assert state is not None
        assert any(state)
        reused = engine.stats.reused_tokens
        restores = engine.kv.stats.restores
        second = await turn(engine, parked, conversation(engine, first))
        assert engine.kv.stats.restores == restores + 1
        # Its own prefix came back with it: the whole first turn was not recomputed.
        assert engine.stats.reused_tokens - reused >= len(conversation(engine, None)) - 1
        assert second == second_warm
        assert not any(state)  # zeroed once restored
        assert parked.state == "warm"
        await asyncio.wrap_future(engine.release(parked))
        assert engine.kv.stats.parked_bytes == 0

    asyncio.run(scenario())


def test_a_dropped_session_is_recomputed_from_its_messages(two_slots: Engine) -> None:
    engine = two_slots
    engine.kv.eviction = "drop"
    try:

        async def scenario() -> None:
            ctx = engine.open_context()
            first = await turn(engine, ctx, conversation(engine, None))
            await crowd_out(engine)
            assert ctx.state == "cold"
            assert ctx.dropped
            assert engine.stats.dropped >= 1
            reused = engine.stats.reused_tokens
            second = await turn(engine, ctx, conversation(engine, first))
            assert engine.stats.reused_tokens == reused  # nothing of it was left to reuse
            assert second.strip()
            assert not ctx.dropped
            assert ctx.state == "warm"
            await asyncio.wrap_future(engine.release(ctx))

        asyncio.run(scenario())
    finally:
        engine.kv.eviction = "park"


def test_a_parked_session_that_is_released_is_wiped(two_slots: Engine) -> None:
    engine = two_slots

    async def scenario() -> None:
        ctx = engine.open_context()
        await turn(engine, ctx, conversation(engine, None))
        await crowd_out(engine)
        state = ctx.parked
        assert state is not None
        assert any(state)
        await asyncio.wrap_future(engine.release(ctx))
        assert not any(state)
        assert engine.kv.stats.parked_bytes == 0

    asyncio.run(scenario())


def test_parked_kv_stays_within_its_budget_and_rss_follows(two_slots: Engine) -> None:
    """Sixteen sessions of ~550 tokens want several times the budget: the oldest parked are
    dropped to make room, the parked bytes never pass the budget, and the process's RSS
    grows by no more than the budget plus a stated margin (32 MiB, for allocator slack and
    the sessions' token lists)."""
    engine = two_slots
    budget = 40 << 20
    margin = 32 << 20
    old_budget = engine.kv.park_budget_bytes
    engine.kv.park_budget_bytes = budget
    essay = " ".join(f"Paragraph {i} is about rivers, hills and the sea." for i in range(50))
    prompt = prompt_for(engine, essay)
    assert len(prompt) > 500

    async def scenario() -> None:
        gc.collect()
        before = psutil.Process().memory_info().rss
        contexts = [engine.open_context() for _ in range(16)]
        peak = 0
        for ctx in contexts:
            await turn(engine, ctx, prompt, 1)
            peak = max(peak, engine.kv.stats.parked_bytes)
            assert engine.kv.stats.parked_bytes <= budget
        rss = psutil.Process().memory_info().rss
        seq = contexts[-1].seq
        assert seq is not None
        per_session = engine.call(lambda: engine.model.state_size(seq)).result()
        assert per_session * 16 > 3 * budget  # the sessions wanted far more than the budget
        assert engine.kv.parked >= 1
        assert engine.kv.stats.drops >= 1
        assert rss - before <= budget + margin, (rss - before, peak)
        for ctx in contexts:
            await asyncio.wrap_future(engine.release(ctx))
        assert engine.kv.stats.parked_bytes == 0

    try:
        asyncio.run(scenario())
    finally:
        engine.kv.park_budget_bytes = old_budget


STORY = "Write a long story about a ship and its crew."


@dataclass
class Flood:
    done: list[str]  # who finished, in order
    texts: list[str]  # A's answers
    waits: dict[str, float]  # the wait the engine expected for A's and B's next request


async def flood_and_probe(engine: Engine) -> Flood:
    """Client A fills every sequence with long turns and queues two more; once A's turns are
    generating, client B asks one short question."""
    n = engine.model.n_seq_max
    story, probe = prompt_for(engine, STORY), prompt_for(engine, "Name a colour.")
    done: list[str] = []
    texts: list[str] = []
    generating = asyncio.Event()

    async def run(name: str, client: str, prompt: list[int], max_tokens: int) -> None:
        ctx = engine.open_context()
        request = GenerationRequest(prompt, max_tokens, GREEDY, client=client)
        try:
            parts: list[str] = []
            async for event in engine.submit(ctx, request):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    if len(parts) >= 4 and client == "a":
                        generating.set()
                assert not isinstance(event, Failed), event
            done.append(name)
            if client == "a":
                texts.append("".join(parts))
        finally:
            await asyncio.wrap_future(engine.release(ctx))

    tasks = [asyncio.ensure_future(run(f"a{i}", "a", story, 64)) for i in range(n + 2)]
    await generating.wait()
    waits = {c: engine.expected_wait_s(GenerationRequest(probe, 4, GREEDY, client=c)) for c in "ab"}
    tasks.append(asyncio.ensure_future(run("b", "b", probe, 4)))
    await asyncio.gather(*tasks)
    return Flood(done, texts, waits)


@pytest.mark.parametrize("eviction", ["park", "drop"])
def test_a_busy_clients_turn_is_preempted_for_a_quiet_one_and_goes_on_unchanged(
    two_slots: Engine, eviction: Eviction
) -> None:
    """B's one request does not wait for any of A's long turns: one of them is preempted,
    parked (or dropped), and resumed later with exactly the text it gives unpreempted."""
    engine = two_slots

    async def alone() -> str:
        ctx = engine.open_context()
        try:
            return await turn(engine, ctx, prompt_for(engine, STORY), 64)
        finally:
            await asyncio.wrap_future(engine.release(ctx))

    engine.kv.eviction = eviction
    try:
        reference = asyncio.run(alone())
        before = engine.stats.preemptions
        parks, drops = engine.kv.stats.parks, engine.kv.stats.drops
        flood = asyncio.run(flood_and_probe(engine))
    finally:
        engine.kv.eviction = "park"
    assert flood.done[0] == "b", flood.done  # before every one of A's turns
    # B is told it need not wait (it will preempt); A, behind its own turns, is not.
    assert flood.waits["b"] == 0
    assert flood.waits["a"] > 0
    assert engine.stats.preemptions > before
    if eviction == "park":
        assert engine.kv.stats.parks > parks
    else:
        assert engine.kv.stats.drops > drops
    assert flood.texts == [reference] * len(flood.texts)
    assert engine.kv.stats.parked_bytes == 0
    assert engine.waiting == 0


def test_without_preemption_a_quiet_client_waits_for_a_turn_to_end(two_slots: Engine) -> None:
    """The control: with `preempt` off, B's request takes the first sequence A frees."""
    engine = two_slots
    engine.preempt = False
    before = engine.stats.preemptions
    try:
        flood = asyncio.run(flood_and_probe(engine))
    finally:
        engine.preempt = True
    assert flood.done.index("b") >= 1, flood.done
    assert flood.waits["b"] > 0
    assert engine.stats.preemptions == before


@pytest.mark.parametrize("priority", [1, 0])
def test_a_higher_class_preempts_where_counts_alone_would_not(
    two_slots: Engine, priority: int
) -> None:
    """A and B run one long turn each on the two sequences. C, running none, is only one
    turn behind each, which is not enough to preempt; it preempts only from a higher class."""
    engine = two_slots
    story, probe = prompt_for(engine, STORY), prompt_for(engine, "Name a colour.")
    before = engine.stats.preemptions

    async def scenario() -> list[str]:
        done: list[str] = []
        generating = {"a": asyncio.Event(), "b": asyncio.Event()}

        async def run(client: str, prompt: list[int], max_tokens: int, prio: int) -> None:
            ctx = engine.open_context()
            request = GenerationRequest(prompt, max_tokens, GREEDY, client=client, priority=prio)
            try:
                async for event in engine.submit(ctx, request):
                    if isinstance(event, TextDelta) and client in generating:
                        generating[client].set()
                    assert not isinstance(event, Failed), event
                done.append(client)
            finally:
                await asyncio.wrap_future(engine.release(ctx))

        tasks = [asyncio.ensure_future(run(c, story, 64, 0)) for c in ("a", "b")]
        await asyncio.gather(*(e.wait() for e in generating.values()))
        tasks.append(asyncio.ensure_future(run("c", probe, 4, priority)))
        await asyncio.gather(*tasks)
        return done

    done = asyncio.run(scenario())
    if priority > 0:
        assert done[0] == "c", done
        assert engine.stats.preemptions == before + 1
    else:
        assert done[-1] == "c", done
        assert engine.stats.preemptions == before
