"""A thousand open sessions on eight KV sequences, on the defaults: each with its own document,
two turns in a sample of them while all are open, citations only from the session's own
document, and one receipt per deleted session.

The turns run in two passes over the sample (every first turn, then every second), so each
session's KV is parked between its turns. Two turns in all thousand take about ten minutes
on two cores, too long for the suite: `bench/sessions.py --only thousand` runs them all on a
real `keep serve` and records the figures in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import random

import httpx

from inference.engine import Engine
from keep.settings import Settings
from tests.conftest import MODEL, TEST_KEY, ServerFactory
from tests.scale import delete_and_count_receipts, open_many, passes

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def test_a_thousand_sessions_on_the_defaults(serve_inproc: ServerFactory, engine: Engine) -> None:
    n = Settings.model_fields["max_sessions"].default
    assert n == 1000
    base = serve_inproc()

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(
            base_url=base, headers=AUTH, timeout=300, limits=limits
        ) as http:
            convs = await open_many(http, n)
            assert engine.stats.contexts >= n  # a thousand open at once
            over = await http.post("/v1/sessions")
            assert over.status_code == 429  # the thousand-and-first
            sample = [convs[i] for i in random.Random(1).sample(range(n), 150)]
            parks = engine.kv.stats.parks
            await passes(http, MODEL, sample, 2, concurrency=24)
            for turn in (0, 1):
                right = sum(conv.named[turn] for conv in sample)
                print(f"\nturn {turn + 1}: {right}/{len(sample)} name their own document's year")
                assert right >= 0.95 * len(sample)
            # Every first turn cited its own document, and nothing else was ever cited.
            assert all(conv.cited[0] for conv in sample)
            assert sum(conv.foreign for conv in sample) == 0
            assert engine.kv.stats.parks - parks >= len(sample) - engine.model.n_seq_max
            print(f"parks {engine.kv.stats.parks}, drops {engine.kv.stats.drops}")
            assert engine.stats.warm <= engine.model.n_seq_max
            added, right = await delete_and_count_receipts(http, convs)
            assert added == n
            assert right == n

    asyncio.run(scenario())
