"""Sessions beyond slots: what a follow-up costs when its KV was warm, parked or dropped, what
a flood from one client costs another client, and a burst of eight times the slots.

All through a real `keep serve`, greedy, in one run:
- **Follow-up time to first token** with about 1,000 tokens of history. Each round opens fresh
  sessions; a *warm* one asks its follow-up at once, a *parked* or *dropped* one after two
  other sessions' turns have taken both sequences (`KEEP_SLOTS=2`). Parked runs on a server
  with `KEEP_KV_EVICTION=park`, dropped on one with `drop`; each is a ratio to the warm
  follow-up measured on the same server in the same rounds (median of interleaved rounds).
- **Fairness:** client B's time to first token while client A keeps 48 long requests going
  (A waits in line with most of them), over B's on the idle server: the reference is the
  same server, idle, in the same run.
- **Burst:** 64 concurrent ephemeral requests on 8 slots; all must succeed; median TTFT.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.engine_vs_llama_server import KEY, free_port, serve
from keep.settings import DEFAULT_MODELS

KEY_B = "keep-bench-key-b-0123456789abcdef"
MODEL = DEFAULT_MODELS[0].name
HISTORY = " ".join(
    f"Clause {i}: the tenant keeps the garden tidy, pays rent on the first of the month, "
    "and tells the landlord about repairs."
    for i in range(40)
)


def keep_server(port: int, **settings: str) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_")}
    env |= {
        "KEEP_DEV_API_KEY": KEY,
        "KEEP_API_KEY_HASHES": f'["{hashlib.sha256(KEY_B.encode()).hexdigest()}"]',
        "KEEP_LOG_LEVEL": "warning",
        **{f"KEEP_{k.upper()}": v for k, v in settings.items()},
    }
    return [str(Path(sys.executable).parent / "keep"), "serve", "--port", str(port)], env


def ttft(http: httpx.Client, body: dict[str, Any], headers: dict[str, str]) -> float:
    start = time.perf_counter()
    first = None
    stream = http.stream(
        "POST", "/v1/chat/completions", json=body | {"stream": True}, headers=headers
    )
    with stream as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data: {"):
                first = time.perf_counter() - start
    assert first is not None
    return first


def chat(messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": max_tokens}


def follow_up(http: httpx.Client, evict: bool) -> float:
    """One session's follow-up TTFT, with its KV left warm or crowded out first."""
    sid = http.post("/v1/sessions").json()["id"]
    headers = {"X-Keep-Session": sid}
    first = [{"role": "user", "content": HISTORY + "\nSummarise the lease in one sentence."}]
    r = http.post("/v1/chat/completions", json=chat(first, 24), headers=headers)
    r.raise_for_status()
    answer = r.json()["choices"][0]["message"]["content"]
    others = []
    if evict:  # two other sessions' turns, kept open, so both sequences hold their KV
        for _ in range(2):
            other = http.post("/v1/sessions").json()["id"]
            hi = chat([{"role": "user", "content": "Hi"}], 4)
            http.post("/v1/chat/completions", json=hi, headers={"X-Keep-Session": other})
            others.append(other)
    messages = [*first, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": "Who pays for repairs?"})
    took = ttft(http, chat(messages, 1), headers)
    for gone in [sid, *others]:
        http.delete(f"/v1/sessions/{gone}")
    return took


def eviction(kind: str, rounds: int) -> None:
    port = free_port()
    cmd, env = keep_server(port, slots="2", kv_eviction=kind, n_ctx_per_session="2048")
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {KEY}"}
    with (
        serve(cmd, env, url + "/readyz", auth),
        httpx.Client(base_url=url, headers=auth, timeout=300) as http,
    ):
        follow_up(http, False)  # warm-up
        warm, evicted = [], []
        for _ in range(rounds):
            warm.append(follow_up(http, False))
            evicted.append(follow_up(http, True))
        ratio = statistics.median(e / w for e, w in zip(evicted, warm, strict=True))
        spread = (min(evicted) / statistics.median(warm), max(evicted) / statistics.median(warm))
        label = "parked" if kind == "park" else "dropped"
        print(
            f"follow-up TTFT, ~1,000 tokens of history: warm "
            f"{statistics.median(warm) * 1000:.0f} ms, "
            f"{label} {statistics.median(evicted) * 1000:.0f} ms; {label}/warm "
            f"{ratio:.2f}x (spread {spread[0]:.2f}-{spread[1]:.2f})"
        )


def fairness(probes: int) -> None:
    port = free_port()
    cmd, env = keep_server(port, n_ctx_per_session="1024")
    url = f"http://127.0.0.1:{port}"
    a = {"Authorization": f"Bearer {KEY}"}
    b = {"Authorization": f"Bearer {KEY_B}"}
    probe = chat([{"role": "user", "content": "Name a colour."}], 8)
    flood = chat([{"role": "user", "content": "Write a long story about a ship."}], 64)
    with serve(cmd, env, url + "/readyz", a), httpx.Client(base_url=url, timeout=300) as http:
        ttft(http, probe, b)
        idle = statistics.median(ttft(http, probe, b) for _ in range(probes))
        stop = threading.Event()

        async def flooding() -> None:
            async with httpx.AsyncClient(base_url=url, headers=a, timeout=300) as client:

                async def one() -> None:
                    while not stop.is_set():
                        await client.post("/v1/chat/completions", json=flood)

                await asyncio.gather(*(one() for _ in range(48)))

        flooder = threading.Thread(target=lambda: asyncio.run(flooding()))
        flooder.start()
        time.sleep(3)
        loaded = []
        for _ in range(probes):
            loaded.append(ttft(http, probe, b))
            time.sleep(0.3)
        stop.set()
        flooder.join()
    ratio = statistics.median(loaded) / idle
    print(
        f"fairness: client B's TTFT idle {idle * 1000:.0f} ms, with client A flooding "
        f"(48 in flight on 8 slots) {statistics.median(loaded) * 1000:.0f} ms "
        f"(max {max(loaded) * 1000:.0f}); flooded/idle {ratio:.2f}x (target <= 2)"
    )


def burst() -> None:
    port = free_port()
    cmd, env = keep_server(port, n_ctx_per_session="1024")
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {KEY}"}
    body = chat([{"role": "user", "content": "Write a poem."}], 16) | {"stream": True}

    async def run() -> list[tuple[int, float]]:
        limits = httpx.Limits(max_connections=128)
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=300, limits=limits) as c:

            async def one() -> tuple[int, float]:
                start = time.perf_counter()
                first = float("nan")
                async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: {") and first != first:
                            first = time.perf_counter() - start
                return r.status_code, first

            return list(await asyncio.gather(*(one() for _ in range(64))))

    with serve(cmd, env, url + "/readyz", auth):
        asyncio.run(run())  # warm-up
        results = asyncio.run(run())
    ok = sum(code == 200 for code, _ in results)
    times = sorted(t for _, t in results)
    print(
        f"burst: 64 concurrent on 8 slots, {ok}/64 answered; TTFT median "
        f"{statistics.median(times) * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["eviction", "fairness", "burst"])
    args = parser.parse_args()
    if args.only in (None, "eviction"):
        eviction("park", args.rounds)
        eviction("drop", args.rounds)
    if args.only in (None, "fairness"):
        fairness(args.rounds * 2)
    if args.only in (None, "burst"):
        burst()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
