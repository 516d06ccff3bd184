"""Issue 13's acceptance: one live appliance on every default, and one hostile client.

The client sends schemas with huge counts, a DOCX that inflates to 60 MB of text, a
conversation whose last turn alone overflows the context with retrieval at `top_k` 100, and
a lone surrogate, each carrying a canary. Each gets a 4xx within its bound; the process's
resident memory grows by less than 200 MiB; its output holds no canary and no traceback;
and it stays ready throughout.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL, LiveServer, free_port, start_server, stop_server
from tests.integration.test_assembly import text
from tests.unit.rag.test_parsing import docx_bomb

# What `start_server` sets for the suite's speed, put back to the defaults.
DEFAULTS = {"KEEP_MAX_SESSIONS": "8", "KEEP_N_CTX_PER_SESSION": "2048"}
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
CANARY = "canary" + secrets.token_hex(8)


def rss_mib(server: LiveServer) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("hostile"), free_port(), DEFAULTS)
    yield live
    stop_server(live)


def schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Reply in JSON."}],
        "max_tokens": 8,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }


HUGE_SCHEMAS = [
    {"type": "string", "minLength": 8_000_000_000},
    {"type": "object", "properties": {CANARY: {"type": "string", "maxLength": 800_000_000}}},
    {"type": "array", "items": {"enum": [CANARY]}, "minItems": 10**12},
    {"type": "string", "pattern": f"^{CANARY}a{{100000000}}$"},
    {"type": "object", "properties": {CANARY: {"type": "integer"}}, "minProperties": 10**9},
]


def test_a_hostile_client_gets_4xx_in_bounds_and_the_appliance_stays_whole(
    server: LiveServer,
) -> None:
    auth = {"Authorization": f"Bearer {server.key}"}
    figures: dict[str, tuple[int, float]] = {}
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=120) as http:
        # Warm every path once (model, grammar, embedder), so growth is the attack's own.
        warm = http.post("/v1/chat/completions", json=schema({"type": "boolean"}))
        assert warm.status_code == 200, warm.text
        session = http.post("/v1/sessions").json()["id"]
        rng = random.Random(13)
        documents = [{"name": f"d{i}.txt", "text": text(rng, 2000)} for i in range(8)]
        added = http.post(f"/v1/sessions/{session}/documents", json={"documents": documents})
        assert added.status_code == 201, added.text
        assert sum(d["chunks"] for d in added.json()["data"]) >= 100  # top_k 100 finds 100
        before = rss_mib(server)

        def attack(name: str, bound_s: float, send: Any) -> httpx.Response:
            started = time.monotonic()
            response: httpx.Response = send()
            elapsed = time.monotonic() - started
            figures[name] = (response.status_code, elapsed)
            assert 400 <= response.status_code < 500, (name, response.status_code)
            assert response.json()["error"]["message"]
            assert CANARY not in response.text
            assert elapsed < bound_s, (name, elapsed)
            assert http.get("/readyz").status_code == 200, name
            return response

        for i, huge in enumerate(HUGE_SCHEMAS):
            refused = attack(
                f"schema {i}", 1.0, lambda h=huge: http.post("/v1/chat/completions", json=schema(h))
            )
            assert refused.json()["error"]["param"] == "response_format"
        bomb = docx_bomb(60 << 20, fill=CANARY + " ")
        assert len(bomb) < 1 << 20  # a few hundred KB on the wire
        attack(
            "docx bomb",
            1.0,
            lambda: http.post(
                f"/v1/sessions/{session}/documents", files={"file": ("b.docx", bomb, DOCX)}
            ),
        )
        history = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": text(rng, 300)}
            for i in range(20)
        ]
        overflow = {
            "model": MODEL,
            "messages": [
                *history,
                {"role": "user", "content": CANARY + " " + text(rng, 60_000)},
            ],
            "max_tokens": 16,
            "keep": {"rag": {"top_k": 100, "min_score": -1.0}},
        }
        over = attack(
            "overflow",
            10.0,
            lambda: http.post(
                "/v1/chat/completions", json=overflow, headers={"X-Keep-Session": session}
            ),
        )
        assert over.json()["error"]["code"] == "context_length_exceeded"
        surrogate = {"model": MODEL, "messages": [{"role": "user", "content": CANARY + "\ud800"}]}
        attack(
            "lone surrogate",
            1.0,
            lambda: http.post(
                "/v1/chat/completions",
                content=json.dumps(surrogate).encode(),
                headers={"Content-Type": "application/json"},
            ),
        )
        grown = rss_mib(server) - before
        # The session and its documents survived every attack.
        assert http.get(f"/v1/sessions/{session}/documents").status_code == 200
        assert http.get("/readyz").status_code == 200
        http.delete(f"/v1/sessions/{session}")
    assert server.process.poll() is None
    assert grown < 200, grown
    log = server.log()
    # The log is the server's, and its audit lines were written.
    assert '"method":"POST","route":"/v1/chat/completions"' in log
    assert '"status":400' in log
    assert CANARY not in log
    assert "Traceback" not in log
    print(
        "hostile figures:",
        {k: (s, round(t, 3)) for k, (s, t) in figures.items()},
        f"RSS +{grown:.1f} MiB",
    )
