"""Prompt-lookup decoding on the real SmolLM2 GGUF: the same text token for token, drafts
taken only from the session's own tokens, and the KV left exactly as without drafts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from appliance.app import load_engine
from inference.engine import Engine, Finished, GenerationRequest, TokenLogprobs
from inference.sampling import SamplingParams
from tests.conftest import make_settings
from tests.integration.test_engine import drain, prompt_for

GREEDY = SamplingParams(temperature=0.0)
PASSAGE = (
    "The Harbour Street clinic opens at eight in the morning on weekdays and at ten on "
    "Saturdays. Patients must bring their referral letter, a photo identity card and a list "
    "of the medicines they take. Parking is available behind the pharmacy on Mill Lane."
)
PROMPTS = [
    f"Copy this notice word for word.\n\n{PASSAGE}",
    f"{PASSAGE}\n\nWhen does the clinic open on Saturdays, and what must patients bring?",
    "Write the word 'alpha' ten times, separated by commas.",
    "Name three colours.",
]


@pytest.fixture(scope="module")
def drafting() -> Iterator[Engine]:
    engine = load_engine(make_settings(lookup_draft=8, lookup_max_turns=4, slots=4))
    yield engine
    engine.close()


async def _run(
    engine: Engine, prompt: str, max_tokens: int, **kw: object
) -> tuple[str, Finished, int]:
    ctx = engine.open_context()
    try:
        request = GenerationRequest(prompt_for(engine, prompt), max_tokens, GREEDY, **kw)  # type: ignore[arg-type]
        text, final = await drain(engine.submit(ctx, request))
        assert isinstance(final, Finished), final
        # The sequence holds exactly the tokens the context says it holds: no draft is left.
        held = await asyncio.wrap_future(
            engine.call(lambda: engine.model.seq_pos_max(ctx.seq) + 1 if ctx.seq is not None else 0)
        )
        assert held == len(ctx.tokens)
        return text, final, held
    finally:
        await asyncio.wrap_future(engine.release(ctx))


def test_drafted_text_is_the_same_token_for_token(engine: Engine, drafting: Engine) -> None:
    async def scenario() -> None:
        for prompt in PROMPTS:
            for max_tokens in (5, 96):
                plain = await _run(engine, prompt, max_tokens)
                drafted = await _run(drafting, prompt, max_tokens)
                assert drafted[0] == plain[0]
                assert drafted[1] == plain[1]  # finish reason and token counts
                assert drafted[2] == plain[2]  # the same KV cells

    before = drafting.stats.accepted_tokens
    asyncio.run(scenario())
    # The copying prompts were drafted and the drafts confirmed, so the path above was taken.
    assert drafting.stats.accepted_tokens - before > 20
    assert drafting.stats.drafted_tokens >= drafting.stats.accepted_tokens


def test_drafts_run_beside_other_turns_unchanged(engine: Engine, drafting: Engine) -> None:
    async def scenario() -> None:
        alone = [(await _run(engine, p, 64))[0] for p in PROMPTS]
        together = await asyncio.gather(*(_run(drafting, p, 64) for p in PROMPTS))
        assert [t[0] for t in together] == alone

    asyncio.run(scenario())


def test_stop_strings_and_logprobs_come_out_as_without_drafts(
    engine: Engine, drafting: Engine
) -> None:
    async def one(e: Engine) -> tuple[str, list[object]]:
        ctx = e.open_context()
        try:
            request = GenerationRequest(
                prompt_for(e, PROMPTS[0]), 96, GREEDY, stop=("Saturdays",), logprobs=2
            )
            gen = e.submit(ctx, request)
            entries, parts = [], []
            async for event in gen:
                if isinstance(event, TokenLogprobs):
                    entries.append(event.entry)
                elif hasattr(event, "text"):
                    parts.append(event.text)  # type: ignore[attr-defined]
            return "".join(parts), entries
        finally:
            await asyncio.wrap_future(e.release(ctx))

    plain = asyncio.run(one(engine))
    drafted = asyncio.run(one(drafting))
    assert drafted == plain
    assert plain[1]  # logprobs were produced


def test_drafts_are_read_from_the_session_alone(drafting: Engine) -> None:
    """A session drafts exactly as much whether or not another session holds the passage."""

    async def drafted(prompt: str) -> int:
        before = drafting.stats.drafted_tokens
        await _run(drafting, prompt, 48)
        return drafting.stats.drafted_tokens - before

    async def scenario() -> tuple[int, int]:
        question = "Where can patients park, and what time does the clinic open on weekdays?"
        alone = await drafted(question)
        holder = drafting.open_context()
        request = GenerationRequest(prompt_for(drafting, PROMPTS[0]), 48, GREEDY)
        await drain(drafting.submit(holder, request))  # its KV stays warm beside the next turn
        beside = await drafted(question)
        await asyncio.wrap_future(drafting.release(holder))
        return alone, beside

    alone, beside = asyncio.run(scenario())
    assert beside == alone
