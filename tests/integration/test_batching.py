"""Continuous batching on the real model: isolation, cancellation, reuse and backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from inference.engine import Engine, GenerationRequest, Started, TextDelta
from inference.sampling import SamplingParams
from tests.conftest import MODEL, TEST_KEY, ServerFactory, chat_body, never_stop
from tests.integration.test_engine import drain, prompt_for
from tests.integration.test_lookup_decoding import PROMPTS as NOTICE_PROMPTS
from tests.stats import mann_whitney_less

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
PROMPTS = [
    "Name three rivers in Africa.",
    "Write a haiku about snow.",
    "What is two plus two?",
    "List some kinds of trees.",
    "Describe the colour blue.",
    "Give me a recipe for tea.",
    "Why is the sky dark at night?",
    "Tell a short story about a fox.",
]


async def stream_chat(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> str:
    import json

    text: list[str] = []
    async with client.stream("POST", url, json={**body, "stream": True}, headers=AUTH) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                assert "error" not in chunk
                if chunk["choices"]:
                    text.append(chunk["choices"][0]["delta"].get("content", ""))
    return "".join(text)


def test_eight_concurrent_sessions_produce_what_each_produces_alone(
    serve_inproc: ServerFactory,
) -> None:
    base = serve_inproc()
    url = base + "/v1/chat/completions"
    bodies = [chat_body(p, max_tokens=32) for p in PROMPTS]

    async def scenario() -> tuple[list[str], list[str]]:
        async with httpx.AsyncClient(timeout=120) as client:
            alone = [await stream_chat(client, url, b) for b in bodies]
            together = await asyncio.gather(*(stream_chat(client, url, b) for b in bodies))
        return alone, list(together)

    alone, together = asyncio.run(scenario())
    assert len(set(alone)) == len(alone)  # eight different answers, so a swap would show
    assert together == alone


def test_concurrent_requests_share_decode_steps(engine: Engine) -> None:
    async def scenario() -> tuple[int, int]:
        seqs = [engine.open_context() for _ in range(4)]
        before = engine.stats.steps
        gens = [
            engine.submit(s, GenerationRequest(prompt_for(engine, p), 20, SamplingParams(0.0)))
            for s, p in zip(seqs, PROMPTS, strict=False)
        ]
        results = await asyncio.gather(*(drain(g) for g in gens))
        for s in seqs:
            await asyncio.wrap_future(engine.release(s))
        tokens = sum(final.completion_tokens for _, final in results)  # type: ignore[union-attr]
        return engine.stats.steps - before, tokens

    steps, tokens = asyncio.run(scenario())
    # Four requests of up to 20 tokens in one batch take about 21 steps, not about 80.
    assert steps <= 25
    assert tokens > 40


async def greedy_at_once(engine: Engine, prompts: list[str], sizes: list[int]) -> list[str]:
    """Each prompt's greedy text, all submitted at once, each in a session of its own."""
    ctxs = [engine.open_context() for _ in prompts]
    gens = [
        engine.submit(c, GenerationRequest(prompt_for(engine, p), n, SamplingParams(0.0)))
        for c, p, n in zip(ctxs, prompts, sizes, strict=True)
    ]
    out = await asyncio.gather(*(drain(g) for g in gens))
    for c in ctxs:
        await asyncio.wrap_future(engine.release(c))
    return [text for text, _ in out]


def test_prompts_prefilled_at_once_give_what_each_gives_alone(engine: Engine) -> None:
    """Prompts of different lengths arriving together: how one is split into llama.cpp calls
    must not depend on the others (its rounding would show in the text)."""
    prompts = [*NOTICE_PROMPTS, "Why is the sky dark at night? " * 12]

    async def scenario() -> tuple[list[str], list[str]]:
        alone = [(await greedy_at_once(engine, [p], [40]))[0] for p in prompts]
        return alone, await greedy_at_once(engine, prompts, [40] * len(prompts))

    alone, together = asyncio.run(scenario())
    assert len(set(alone)) == len(alone)
    assert together == alone


def test_running_turns_are_moved_onto_consecutive_sequences_unchanged(engine: Engine) -> None:
    """Short turns finish and leave holes between long ones; the long ones are moved (their
    own KV, into free sequences) so that the batch is one micro-batch again, and their text
    is what each gives alone."""
    lengths = [6, 48, 6, 48, 6, 48]

    async def scenario() -> tuple[list[str], list[str], int]:
        alone = [
            (await greedy_at_once(engine, [p], [n]))[0]
            for p, n in zip(PROMPTS, lengths, strict=False)
        ]
        before = engine.kv.stats.moves
        together = await greedy_at_once(engine, PROMPTS[: len(lengths)], lengths)
        return alone, together, engine.kv.stats.moves - before

    alone, together, moves = asyncio.run(scenario())
    assert moves >= 1
    assert together == alone
    assert engine.live_sequences().result(timeout=30) == 0  # every moved-from sequence is empty


def test_a_cancelled_request_leaves_the_batch_within_one_step(engine: Engine) -> None:
    async def scenario() -> int:
        seqs = [engine.open_context() for _ in range(2)]
        gens = [
            engine.submit(s, GenerationRequest(prompt_for(engine, "Write an essay."), 200))
            for s in seqs
        ]
        for gen in gens:
            assert isinstance(await gen.next_event(), Started)
        while not isinstance(await gens[0].next_event(), TextDelta):
            pass
        assert engine.active_slots().result() == 2
        gens[0].cancel()
        at_cancel = engine.stats.steps
        while engine.active_slots().result() != 1:  # noqa: ASYNC110 - polls another thread
            await asyncio.sleep(0.001)
        steps = engine.stats.steps - at_cancel
        await drain(gens[0])
        gens[1].cancel()
        await drain(gens[1])
        for seq in seqs:
            await asyncio.wrap_future(engine.release(seq))
        return steps

    # The step in flight when cancel() was called may finish; the next step drops the request
    # before it decodes. The slot count is read back between steps, after that dropping step
    # has run for the other request, hence at most 2 steps counted.
    assert asyncio.run(scenario()) <= 2


def test_a_client_that_hangs_up_frees_its_slot(serve_inproc: ServerFactory, engine: Engine) -> None:
    base = serve_inproc()
    body = chat_body("Write a very long essay about mountains.", max_tokens=250, stream=True)
    body["logit_bias"] = never_stop(engine)
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", base + "/v1/chat/completions", json=body, headers=AUTH) as r,
    ):
        assert r.status_code == 200
        # The first chunk is sent once the prompt is decoded: the request was in the batch.
        first = next(r.iter_lines())
        assert first.startswith("data: {"), first
    deadline = time.monotonic() + 2
    while engine.active_slots().result() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.active_slots().result() == 0
    while engine.free_sequences != engine.model.n_seq_max and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.free_sequences == engine.model.n_seq_max
    # The same holds for a non-streaming request whose client gives up.
    with httpx.Client(timeout=0.5) as client, contextlib.suppress(httpx.ReadTimeout):
        client.post(base + "/v1/chat/completions", json={**body, "stream": False}, headers=AUTH)
    deadline = time.monotonic() + 2
    while engine.free_sequences != engine.model.n_seq_max and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.free_sequences == engine.model.n_seq_max


def test_a_burst_beyond_the_slots_waits_in_line_and_every_request_is_answered(
    serve_inproc: ServerFactory, engine: Engine
) -> None:
    """Eight times the slots at once, each a new ephemeral session: they queue, and all get
    their answer. The median time to first token is printed for the record."""
    slots = engine.model.n_seq_max
    base = serve_inproc()
    url = base + "/v1/chat/completions"
    body = chat_body("Write a poem.", max_tokens=8, stream=True)

    async def one(client: httpx.AsyncClient) -> tuple[int, float]:
        start = time.perf_counter()
        first = float("nan")
        async with client.stream("POST", url, json=body, headers=AUTH) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {") and first != first:
                    first = time.perf_counter() - start
        return r.status_code, first

    async def burst() -> list[tuple[int, float]]:
        limits = httpx.Limits(max_connections=8 * slots)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return list(await asyncio.gather(*(one(client) for _ in range(8 * slots))))

    results = asyncio.run(burst())
    assert [code for code, _ in results] == [200] * (8 * slots)
    ttfts = sorted(t for _, t in results)
    print(
        f"\n{8 * slots} concurrent on {slots} slots: TTFT median {statistics.median(ttfts):.3f} s"
    )
    assert engine.waiting == 0


def test_with_the_line_full_the_excess_gets_429_fast(
    serve_inproc: ServerFactory, engine: Engine
) -> None:
    """Every slot generating and the waiting line full: each further request is answered
    429 `queue_full` with Retry-After within 100 ms, and those waiting are served after.

    The latency is measured one request at a time, over one connection, with all slots held
    by streams that are known to be in the batch: a burst's own client-side queueing (in this
    one process, on 2 cores) is not what the bound is about.
    """
    slots = engine.model.n_seq_max
    depth = 2
    base = serve_inproc(max_tokens_cap=900, queue_depth=depth)
    url = base + "/v1/chat/completions"
    long = chat_body("Write a very long essay about rivers.", max_tokens=900, stream=True)
    long["logit_bias"] = never_stop(engine)

    def hold(client: httpx.Client) -> tuple[httpx.Response, Iterator[str]]:
        r = client.send(client.build_request("POST", url, json=long, headers=AUTH), stream=True)
        assert r.status_code == 200
        lines = r.iter_lines()  # kept: a collected line iterator closes the response
        assert next(lines).startswith("data: {")  # decoding: in the batch
        return r, lines

    def wait_in_line() -> int:
        r = httpx.post(url, json=chat_body("Say yes.", max_tokens=4), headers=AUTH, timeout=120)
        return r.status_code

    with contextlib.ExitStack() as held, httpx.Client(timeout=60) as probe:
        clients = [held.enter_context(httpx.Client(timeout=60)) for _ in range(slots)]
        with ThreadPoolExecutor(slots) as pool:
            streams = list(pool.map(hold, clients))
        for r, _ in streams:
            held.callback(r.close)
        assert engine.active_slots().result() == slots
        waiters = ThreadPoolExecutor(depth)
        waiting = [waiters.submit(wait_in_line) for _ in range(depth)]
        deadline = time.monotonic() + 30
        while engine.waiting < depth and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.waiting == depth
        rejected: list[float] = []
        for _ in range(10):
            start = time.perf_counter()
            r = probe.post(url, json=chat_body("Write a poem.", max_tokens=48), headers=AUTH)
            rejected.append(time.perf_counter() - start)
            assert r.status_code == 429, r.status_code
            assert r.json()["error"]["code"] == "queue_full"
            assert int(r.headers["retry-after"]) >= 1
        assert engine.active_slots().result() == slots  # the held streams were still running
    assert max(rejected) < 0.1, rejected
    assert [w.result(timeout=120) for w in waiting] == [200] * depth
    waiters.shutdown()


def _ttft(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> float:
    start = time.perf_counter()
    with client.stream("POST", url, json={**body, "stream": True}, headers=headers) as r:
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: {"):  # the first chunk is sent once the prompt is decoded
                elapsed = time.perf_counter() - start
                break
        for _ in lines:
            pass
    assert r.status_code == 200
    return elapsed


def _prompt_tokens(client: httpx.Client, url: str, body: dict[str, Any]) -> int:
    r = client.post(url, json=body, headers=AUTH)
    assert r.status_code == 200
    return int(r.json()["usage"]["prompt_tokens"])


def test_no_prefix_is_reused_across_sessions_but_is_within_one(
    serve_inproc: ServerFactory,
) -> None:
    """Session B gains nothing from a prefix that session A has in its KV cache.

    Method: 30 trials each of B sending (a) a prompt that shares a ~200-token prefix with A's
    prompt and (b) a fresh prompt of exactly the same token count, each in a new session, and
    of A sending (c) its own follow-up, in a shuffled order per trial so that no kind always
    runs after another. One-sided Mann-Whitney U on time to first token: B's shared-prefix
    requests must not be faster at p < 0.01, and their median must be within 15% of the fresh
    ones. The same test must find A's own follow-up turn faster than fresh at p < 0.001, so it
    can tell reuse when reuse exists. (A fresh prompt one token longer, or a fixed order, is
    enough for the test to tell a ~1% difference that is not reuse at all.)
    """
    base = serve_inproc()
    url = base + "/v1/chat/completions"
    words = [
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
        "foxtrot",
        "golf",
        "hotel",
        "india",
        "juliet",
        "kilo",
        "lima",
    ]

    def text(rotation: int) -> str:  # about 200 tokens
        return " ".join(words[(i + rotation) % len(words)] for i in range(127))

    def body(prefix: str, tail: str) -> dict[str, Any]:
        return {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"{prefix} {tail}"}],
            "temperature": 0,
            "max_tokens": 1,
        }

    shared = text(0)
    rng = random.Random(20261127)
    with httpx.Client(timeout=60) as client:
        # The fresh prompt starts elsewhere in the word cycle and has the same token count.
        target = _prompt_tokens(client, url, body(shared, "question 0"))
        fresh_text = next(
            (
                t
                for t in map(text, range(1, len(words)))
                if _prompt_tokens(client, url, body(t, "question 0")) == target
            ),
            None,
        )
        assert fresh_text is not None, "no rotation of the words has the shared token count"
        session_a = client.post(base + "/v1/sessions", headers=AUTH).json()["id"]
        a_headers = {**AUTH, "X-Keep-Session": session_a}
        _ttft(client, url, body(shared, "first"), a_headers)  # A's prefix is now cached
        times: dict[str, list[float]] = {"shared": [], "fresh": [], "follow": []}
        for i in range(30):
            trial = {
                "shared": (body(shared, f"question {i}"), AUTH),
                "fresh": (body(fresh_text, f"question {i}"), AUTH),
                "follow": (body(shared, f"question {i}"), a_headers),
            }
            order = list(trial)
            rng.shuffle(order)
            for kind in order:
                times[kind].append(_ttft(client, url, *trial[kind]))
        client.delete(f"{base}/v1/sessions/{session_a}", headers=AUTH)

    p_shared = mann_whitney_less(times["shared"], times["fresh"])
    p_follow = mann_whitney_less(times["follow"], times["fresh"])
    ratio = statistics.median(times["shared"]) / statistics.median(times["fresh"])
    assert p_shared >= 0.01, (p_shared, ratio)
    assert ratio > 0.85, ratio
    assert p_follow < 0.001, p_follow
