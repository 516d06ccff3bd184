"""The engine on the real SmolLM2 GGUF: KV sequences, order, determinism, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from inference.engine import (
    Engine,
    Failed,
    Finished,
    Generation,
    GenerationRequest,
    Started,
    TextDelta,
)
from inference.errors import Cancelled, DeadlineExceeded, GrammarDeadEnd, QueueFull
from inference.sampling import Grammar, SamplingParams
from inference.template import ChatMessage

GREEDY = SamplingParams(temperature=0.0)


def prompt_for(engine: Engine, text: str) -> list[int]:
    template = engine.model.template
    assert template is not None
    return engine.model.tokenize_prompt(template.render([ChatMessage("user", text)]))


async def drain(generation: Generation) -> tuple[str, Finished | Failed]:
    parts: list[str] = []
    async for event in generation:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, Finished | Failed):
            return "".join(parts), event
    raise AssertionError("the generation ended without a final event")


def live(engine: Engine) -> int:
    return engine.live_sequences().result(timeout=30)


async def generate(engine: Engine, text: str, max_tokens: int = 16) -> str:
    seq = engine.open_context()
    try:
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, text), max_tokens, GREEDY))
        out, final = await drain(gen)
        assert isinstance(final, Finished)
        return out
    finally:
        await asyncio.wrap_future(engine.release(seq))


def test_release_frees_the_sequence_in_llama_cpp_memory(engine: Engine) -> None:
    async def scenario() -> None:
        assert live(engine) == 0
        seq = engine.open_context()
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, "Hello"), 4, GREEDY))
        _, final = await drain(gen)
        assert isinstance(final, Finished)
        assert live(engine) == 1
        assert seq.seq is not None
        assert engine.model.seq_pos_max(seq.seq) >= final.prompt_tokens - 1
        await asyncio.wrap_future(engine.release(seq))
        assert live(engine) == 0

    asyncio.run(scenario())


def test_more_turns_than_sequences_wait_their_turn_and_the_line_is_bounded(
    engine: Engine,
) -> None:
    async def scenario() -> None:
        n = engine.model.n_seq_max
        contexts = [engine.open_context() for _ in range(n + 4)]
        request = GenerationRequest(prompt_for(engine, "Say yes."), 8, GREEDY)
        gens = [engine.submit(ctx, request, max_waiting=4) for ctx in contexts]
        assert engine.waiting == 4
        # Every sequence is taken or promised, and four wait: a fifth is refused at once.
        extra = engine.open_context()
        with pytest.raises(QueueFull):
            engine.submit(extra, request, max_waiting=4)
        contexts.append(extra)
        finals = [(await drain(gen))[1] for gen in gens]
        assert all(isinstance(final, Finished) for final in finals)
        assert engine.free_sequences == 0  # all warm: their KV stays until needed
        for ctx in contexts:
            await asyncio.wrap_future(engine.release(ctx))
        assert engine.free_sequences == n
        assert engine.waiting == 0

    asyncio.run(scenario())


def test_greedy_output_is_deterministic_and_independent_of_other_sequences(engine: Engine) -> None:
    async def scenario() -> None:
        alone = await generate(engine, "Name three colours.")
        # Fill another sequence with unrelated content, then ask again.
        other = engine.open_context()
        gen = engine.submit(
            other, GenerationRequest(prompt_for(engine, "Count to ten."), 8, GREEDY)
        )
        await drain(gen)
        again = await generate(engine, "Name three colours.")
        await asyncio.wrap_future(engine.release(other))
        assert alone == again
        assert alone.strip()

    asyncio.run(scenario())


def test_waiting_requests_are_served_in_arrival_order(engine: Engine) -> None:
    async def scenario() -> None:
        seqs = [engine.open_context() for _ in range(3)]
        finished: list[int] = []

        async def one(i: int, gen: Generation) -> None:
            await drain(gen)
            finished.append(i)

        gens = [
            engine.submit(s, GenerationRequest(prompt_for(engine, f"Story {i}"), 8, GREEDY))
            for i, s in enumerate(seqs)
        ]
        # Consume in reverse so that completion order reflects the engine, not the consumer.
        await asyncio.gather(*(one(i, g) for i, g in reversed(list(enumerate(gens)))))
        for s in seqs:
            await asyncio.wrap_future(engine.release(s))
        assert finished == [0, 1, 2]

    asyncio.run(scenario())


def test_cancel_stops_within_a_step_and_keeps_the_sequence_usable(engine: Engine) -> None:
    async def scenario() -> None:
        seq = engine.open_context()
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, "Write a long essay."), 200))
        first = await gen.next_event()
        assert isinstance(first, Started)
        await gen.next_event()
        gen.cancel()
        _, final = await drain(gen)
        assert isinstance(final, Failed)
        assert isinstance(final.error, Cancelled)
        await asyncio.wrap_future(engine.release(seq))
        assert live(engine) == 0

    asyncio.run(scenario())


def test_deadline_stops_a_request(engine: Engine) -> None:
    async def scenario() -> None:
        seq = engine.open_context()
        request = GenerationRequest(
            prompt_for(engine, "Write a long essay."),
            400,
            GREEDY,
            deadline=time.monotonic() + 0.3,
        )
        started = time.monotonic()
        _, final = await drain(engine.submit(seq, request))
        await asyncio.wrap_future(engine.release(seq))
        assert isinstance(final, Failed)
        assert isinstance(final.error, DeadlineExceeded)
        assert time.monotonic() - started < 5

    asyncio.run(scenario())


def test_the_event_loop_stays_responsive_while_decoding(engine: Engine) -> None:
    async def scenario() -> float:
        seq = engine.open_context()
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, "Write an essay."), 150))
        worst = 0.0
        while not gen.done:
            tick = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, time.perf_counter() - tick)
            if not gen._events.empty():
                await gen.next_event()
        await asyncio.wrap_future(engine.release(seq))
        return worst

    worst = asyncio.run(scenario())
    # A 5 ms sleep that took 250 ms would mean decoding ran on the loop's thread.
    assert worst < 0.25


def test_a_release_happens_even_if_nobody_waits_for_it(engine: Engine) -> None:
    async def scenario() -> None:
        seq = engine.open_context()
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, "Hello"), 4, GREEDY))
        await drain(gen)
        waiter = asyncio.ensure_future(asyncio.wrap_future(engine.release(seq)))
        waiter.cancel()  # as when the request that releases it is itself cancelled
        for _ in range(200):
            if engine.free_sequences == engine.model.n_seq_max:
                break
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert engine.free_sequences == engine.model.n_seq_max
    assert live(engine) == 0


def test_a_grammar_that_dead_ends_fails_only_its_own_request(engine: Engine) -> None:
    """llama.cpp would accept a token its grammar ruled out and abort the process."""
    dead_end = Grammar('root ::= "a" [^\\x00-\\U0010FFFF]')

    async def main() -> None:
        seq = engine.open_context()
        try:
            prompt = prompt_for(engine, "Say a.")
            sampling = SamplingParams(temperature=0.0, grammar=dead_end)
            gen = engine.submit(seq, GenerationRequest(prompt, 8, sampling))
            _, final = await drain(gen)
            assert isinstance(final, Failed)
            assert isinstance(final.error, GrammarDeadEnd)
            sampling = SamplingParams(temperature=0.7, seed=1, grammar=dead_end)
            _, final = await drain(engine.submit(seq, GenerationRequest(prompt, 8, sampling)))
            assert isinstance(final, Failed)
            assert isinstance(final.error, GrammarDeadEnd)
        finally:
            await asyncio.wrap_future(engine.release(seq))
        assert engine.alive
        assert await generate(engine, "What is the capital of France?", 4)

    asyncio.run(main())


def test_the_line_is_fair_across_clients_and_honours_priority(engine: Engine) -> None:
    """Client A fills every sequence and queues twenty more; B's one request, queued after
    all of them, starts at the first free sequence, and C's, of a higher class, before it."""

    async def scenario() -> None:
        n = engine.model.n_seq_max
        prompt = prompt_for(engine, "Say yes.")
        order: list[str] = []

        async def run(name: str, client: str, priority: int, max_tokens: int) -> None:
            ctx = engine.open_context()
            request = GenerationRequest(
                prompt, max_tokens, GREEDY, client=client, priority=priority
            )
            gen = engine.submit(ctx, request)
            try:
                async for event in gen:
                    if isinstance(event, Started):
                        order.append(name)
                    assert not isinstance(event, Failed)
            finally:
                await asyncio.wrap_future(engine.release(ctx))

        # A's first turns end one by one, so each free sequence is a choice between A (with
        # the rest still running) and the others.
        tasks = [asyncio.ensure_future(run(f"a{i}", "a", 1, 8 + 3 * i)) for i in range(n)]
        tasks += [asyncio.ensure_future(run(f"a{n + i}", "a", 1, 4)) for i in range(20)]
        while engine.waiting < 20:  # noqa: ASYNC110 - the engine's own thread fills the line
            await asyncio.sleep(0.005)
        tasks.append(asyncio.ensure_future(run("b", "b", 1, 4)))
        tasks.append(asyncio.ensure_future(run("c", "c", 2, 4)))
        await asyncio.gather(*tasks)
        queued = order[n:]
        assert queued.index("c") == 0
        assert queued.index("b") == 1
        assert engine.waiting == 0

    asyncio.run(scenario())


def test_with_no_waiting_line_a_free_sequence_is_still_taken(engine: Engine) -> None:
    async def scenario() -> None:
        ctx = engine.open_context()
        gen = engine.submit(
            ctx, GenerationRequest(prompt_for(engine, "Hi"), 2, GREEDY), max_waiting=0
        )
        _, final = await drain(gen)
        assert isinstance(final, Finished)
        await asyncio.wrap_future(engine.release(ctx))

    asyncio.run(scenario())
