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
from inference.errors import Cancelled, DeadlineExceeded, GrammarDeadEnd, NoFreeSequence
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
    seq = engine.acquire_sequence()
    try:
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, text), max_tokens, GREEDY))
        out, final = await drain(gen)
        assert isinstance(final, Finished)
        return out
    finally:
        await asyncio.wrap_future(engine.release_sequence(seq))


def test_release_frees_the_sequence_in_llama_cpp_memory(engine: Engine) -> None:
    async def scenario() -> None:
        assert live(engine) == 0
        seq = engine.acquire_sequence()
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, "Hello"), 4, GREEDY))
        _, final = await drain(gen)
        assert isinstance(final, Finished)
        assert live(engine) == 1
        assert engine.model.seq_pos_max(seq.id) >= final.prompt_tokens - 1
        await asyncio.wrap_future(engine.release_sequence(seq))
        assert live(engine) == 0

    asyncio.run(scenario())


def test_sequences_run_out_and_come_back(engine: Engine) -> None:
    held = [engine.acquire_sequence() for _ in range(engine.model.n_seq_max)]
    assert len({h.id for h in held}) == len(held)
    with pytest.raises(NoFreeSequence):
        engine.acquire_sequence()
    for handle in held:
        engine.release_sequence(handle).result(timeout=30)
    assert engine.free_sequences == engine.model.n_seq_max


def test_greedy_output_is_deterministic_and_independent_of_other_sequences(engine: Engine) -> None:
    async def scenario() -> None:
        alone = await generate(engine, "Name three colours.")
        # Fill another sequence with unrelated content, then ask again.
        other = engine.acquire_sequence()
        gen = engine.submit(
            other, GenerationRequest(prompt_for(engine, "Count to ten."), 8, GREEDY)
        )
        await drain(gen)
        again = await generate(engine, "Name three colours.")
        await asyncio.wrap_future(engine.release_sequence(other))
        assert alone == again
        assert alone.strip()

    asyncio.run(scenario())


def test_waiting_requests_are_served_in_arrival_order(engine: Engine) -> None:
    async def scenario() -> None:
        seqs = [engine.acquire_sequence() for _ in range(3)]
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
            await asyncio.wrap_future(engine.release_sequence(s))
        assert finished == [0, 1, 2]

    asyncio.run(scenario())


def test_cancel_stops_within_a_step_and_keeps_the_sequence_usable(engine: Engine) -> None:
    async def scenario() -> None:
        seq = engine.acquire_sequence()
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, "Write a long essay."), 200))
        first = await gen.next_event()
        assert isinstance(first, Started)
        await gen.next_event()
        gen.cancel()
        _, final = await drain(gen)
        assert isinstance(final, Failed)
        assert isinstance(final.error, Cancelled)
        await asyncio.wrap_future(engine.release_sequence(seq))
        assert live(engine) == 0

    asyncio.run(scenario())


def test_deadline_stops_a_request(engine: Engine) -> None:
    async def scenario() -> None:
        seq = engine.acquire_sequence()
        request = GenerationRequest(
            prompt_for(engine, "Write a long essay."),
            400,
            GREEDY,
            deadline=time.monotonic() + 0.3,
        )
        started = time.monotonic()
        _, final = await drain(engine.submit(seq, request))
        await asyncio.wrap_future(engine.release_sequence(seq))
        assert isinstance(final, Failed)
        assert isinstance(final.error, DeadlineExceeded)
        assert time.monotonic() - started < 5

    asyncio.run(scenario())


def test_the_event_loop_stays_responsive_while_decoding(engine: Engine) -> None:
    async def scenario() -> float:
        seq = engine.acquire_sequence()
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, "Write an essay."), 150))
        worst = 0.0
        while not gen.done:
            tick = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, time.perf_counter() - tick)
            if not gen._events.empty():
                await gen.next_event()
        await asyncio.wrap_future(engine.release_sequence(seq))
        return worst

    worst = asyncio.run(scenario())
    # A 5 ms sleep that took 250 ms would mean decoding ran on the loop's thread.
    assert worst < 0.25


def test_a_release_happens_even_if_nobody_waits_for_it(engine: Engine) -> None:
    async def scenario() -> None:
        seq = engine.acquire_sequence()
        gen = engine.submit(seq, GenerationRequest(prompt_for(engine, "Hello"), 4, GREEDY))
        await drain(gen)
        waiter = asyncio.ensure_future(asyncio.wrap_future(engine.release_sequence(seq)))
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
        seq = engine.acquire_sequence()
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
            await asyncio.wrap_future(engine.release_sequence(seq))
        assert engine.alive
        assert await generate(engine, "What is the capital of France?", 4)

    asyncio.run(main())
