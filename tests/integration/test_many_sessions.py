"""A thousand open sessions on eight KV sequences, on the defaults: each with its own document,
two turns in a sample of them while all are open, citations only from the session's own
document, and one receipt per deleted session.

Two turns in all thousand take about twelve minutes on two cores (measured once: longer than
the default idle TTL, so the first sessions expired before the run ended); the suite takes a
random sample of 150, interleaved across the thousand so that their KV is parked between turns.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from inference.engine import Engine
from keep.settings import Settings
from tests.conftest import MODEL, SYSTEM, TEST_KEY, ServerFactory

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def document(i: int) -> tuple[str, str]:
    """Session i's own fact, and the year that answers the question about it."""
    year = str(1500 + random.Random(i).randrange(500))
    return f"Vault {i} was sealed in {year}.", year


def chat(messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 16}


async def open_with_document(http: httpx.AsyncClient, i: int) -> tuple[str, set[str]]:
    r = await http.post("/v1/sessions")
    assert r.status_code == 201, r.status_code
    sid = r.json()["id"]
    text, _ = document(i)
    r = await http.post(
        f"/v1/sessions/{sid}/documents", json={"documents": [{"name": "vault.txt", "text": text}]}
    )
    assert r.status_code == 201, r.status_code
    return sid, {d["id"] for d in r.json()["data"]}


async def two_turns(http: httpx.AsyncClient, i: int, sid: str, own: set[str]) -> list[bool]:
    """Whether each turn named its own document's year; every citation must be its own."""
    _, year = document(i)
    headers = {"X-Keep-Session": sid}
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"In which year was vault {i} sealed?"},
    ]
    named: list[bool] = []
    for follow_up in ("Say that year again.", None):
        r = await http.post("/v1/chat/completions", json=chat(messages), headers=headers)
        assert r.status_code == 200, (r.status_code, r.json().get("error"))
        body = r.json()
        answer = body["choices"][0]["message"]["content"]
        # The follow-up's own words may match no passage; what is cited is always its own.
        citations = body.get("keep", {}).get("citations", [])
        assert citations or follow_up is None
        assert {c["document_id"] for c in citations} <= own
        named.append(year in answer)
        if follow_up is not None:
            messages += [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": follow_up},
            ]
            await asyncio.sleep(0.5)  # others' turns run meanwhile: this KV is parked
    return named


def test_a_thousand_sessions_on_the_defaults(serve_inproc: ServerFactory, engine: Engine) -> None:
    n = Settings.model_fields["max_sessions"].default
    assert n == 1000
    base = serve_inproc()

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(
            base_url=base, headers=AUTH, timeout=300, limits=limits
        ) as http:
            size = (await http.get("/v1/receipts/checkpoint")).json()["size"]
            gate = asyncio.Semaphore(32)

            async def opened(i: int) -> tuple[str, set[str]]:
                async with gate:
                    return await open_with_document(http, i)

            sessions = await asyncio.gather(*(opened(i) for i in range(n)))
            assert engine.stats.contexts >= n  # a thousand open at once
            over = await http.post("/v1/sessions")
            assert over.status_code == 429  # the thousand-and-first
            sample = random.Random(1).sample(range(n), 150)
            turns = asyncio.Semaphore(24)

            async def turned(i: int) -> list[bool]:
                async with turns:
                    return await two_turns(http, i, *sessions[i])

            named = await asyncio.gather(*(turned(i) for i in sample))
            for turn in (0, 1):
                right = sum(k[turn] for k in named)
                print(f"\nturn {turn + 1}: {right}/{len(sample)} name their own document's year")
                assert right >= 0.95 * len(sample)
            assert engine.kv.stats.parks > 0
            stats = engine.stats
            print(f"parks {engine.kv.stats.parks}, drops {engine.kv.stats.drops}")
            assert stats.warm <= engine.model.n_seq_max
            for sid, _ in sessions:
                assert (await http.delete(f"/v1/sessions/{sid}")).status_code == 200
            after = (await http.get("/v1/receipts/checkpoint")).json()["size"]
            assert after - size == n
            for k, (sid, _) in enumerate(sessions):
                r = await http.get("/v1/receipts", params={"session_id": sid})
                assert r.status_code == 200
                assert r.json()["receipt"]["requests"] == (2 if k in sample else 0)

    asyncio.run(scenario())
