"""Many sessions at once, each with its own small document and two turns, for the suite (a
sample of a thousand) and for bench/sessions.py (all thousand).

The turns run in passes: every session's first turn, then every session's second, so that
between its two turns a session's KV is parked (or dropped) while the others run, and no
session sits idle for longer than one pass.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import SYSTEM

FOLLOW_UP = "Say that year again."


def document(i: int) -> tuple[str, str]:
    """Session i's own fact, and the year that answers the question about it."""
    year = str(1500 + random.Random(i).randrange(500))
    return f"Vault {i} was sealed in {year}.", year


@dataclass
class Conversation:
    i: int
    sid: str
    own: set[str]  # the ids of its own documents
    messages: list[dict[str, str]] = field(default_factory=list)
    named: list[bool] = field(default_factory=list)  # whether each answer named its year
    cited: list[bool] = field(default_factory=list)  # whether each answer cited anything
    foreign: int = 0  # citations of documents that are not its own

    @property
    def year(self) -> str:
        return document(self.i)[1]


async def open_with_document(http: httpx.AsyncClient, i: int) -> Conversation:
    r = await http.post("/v1/sessions")
    assert r.status_code == 201, r.status_code
    sid = r.json()["id"]
    text, _ = document(i)
    r = await http.post(
        f"/v1/sessions/{sid}/documents", json={"documents": [{"name": "vault.txt", "text": text}]}
    )
    assert r.status_code == 201, r.status_code
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"In which year was vault {i} sealed?"},
    ]
    return Conversation(i, sid, {d["id"] for d in r.json()["data"]}, messages)


async def open_many(http: httpx.AsyncClient, n: int, concurrency: int = 32) -> list[Conversation]:
    gate = asyncio.Semaphore(concurrency)

    async def opened(i: int) -> Conversation:
        async with gate:
            return await open_with_document(http, i)

    return list(await asyncio.gather(*(opened(i) for i in range(n))))


async def take_turn(http: httpx.AsyncClient, model: str, conv: Conversation) -> None:
    """One greedy turn of the conversation; the answer and the follow-up join its messages."""
    body: dict[str, Any] = {
        "model": model,
        "messages": conv.messages,
        "temperature": 0,
        "max_tokens": 16,
    }
    r = await http.post("/v1/chat/completions", json=body, headers={"X-Keep-Session": conv.sid})
    assert r.status_code == 200, (r.status_code, r.json().get("error"))
    reply = r.json()
    answer = reply["choices"][0]["message"]["content"]
    citations = reply.get("keep", {}).get("citations", [])
    conv.named.append(conv.year in answer)
    conv.cited.append(bool(citations))
    conv.foreign += sum(c["document_id"] not in conv.own for c in citations)
    conv.messages += [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": FOLLOW_UP},
    ]


async def passes(
    http: httpx.AsyncClient, model: str, convs: list[Conversation], n: int, concurrency: int
) -> list[float]:
    """`n` passes of one turn for every conversation; the seconds each pass took."""
    gate = asyncio.Semaphore(concurrency)

    async def turned(conv: Conversation) -> None:
        async with gate:
            await take_turn(http, model, conv)

    took = []
    for _ in range(n):
        start = time.monotonic()
        await asyncio.gather(*(turned(conv) for conv in convs))
        took.append(time.monotonic() - start)
    return took


async def delete_and_count_receipts(
    http: httpx.AsyncClient, convs: list[Conversation]
) -> tuple[int, int]:
    """Delete every session; how many receipts the log gained, and how many of the sessions'
    receipts count exactly the turns it took (none for a session in no pass)."""
    size = (await http.get("/v1/receipts/checkpoint")).json()["size"]
    for conv in convs:
        assert (await http.delete(f"/v1/sessions/{conv.sid}")).status_code == 200
    added = (await http.get("/v1/receipts/checkpoint")).json()["size"] - size
    right = 0
    for conv in convs:
        r = await http.get("/v1/receipts", params={"session_id": conv.sid})
        assert r.status_code == 200
        right += r.json()["receipt"]["requests"] == len(conv.named)
    return added, right
