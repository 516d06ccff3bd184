"""Sessions beyond slots: what a follow-up costs when its KV was warm, parked or dropped, what
a flood from one client costs another client, a burst of eight times the slots, and a
thousand sessions with two turns each.

All through a real `keep serve`, greedy, in one run, against llama-server built from the same
llama.cpp with the same slots, context per slot and threads (its own defaults otherwise,
including its prompt cache in RAM, which it shares across clients and Keep does not have):
- **Follow-up time to first token** with about 1,000 tokens of history, on two slots. Each
  round opens fresh conversations; a *warm* one asks its follow-up at once, an *evicted* one
  after two other conversations have taken both slots. Keep with `KEEP_KV_EVICTION=park` and
  with `drop`, and llama-server, run side by side, interleaved round by round; each figure is
  the median of the per-round ratios to the same server's warm follow-up.
- **Fairness:** client B's time to first token while client A keeps 48 long requests going on
  8 slots, over B's on the same server idle: Keep with preemption (the default) and without,
  and llama-server, whose line is first come, first served.
- **Burst:** 64 concurrent ephemeral requests on 8 slots; all must succeed; median TTFT.
- **A thousand sessions** on the defaults, each with its own document, two turns each in two
  passes; the reference is the same server's turn time with as many sessions as slots.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_vs_llama_server import KEY, free_port, serve
from bench.llama_server import command as llama_server_command
from inference.registry import verify
from keep.settings import DEFAULT_MODELS
from tests.scale import delete_and_count_receipts, open_many, passes

KEY_B = "keep-bench-key-b-0123456789abcdef"
MODEL = DEFAULT_MODELS[0].name
THREADS = len(os.sched_getaffinity(0))
# A fresh connection per request, to every server alike: a server idles past its keep-alive
# while another runs, llama-server closes a connection after a few requests, and a reused
# connection the server has just closed fails the request.
FRESH = httpx.Limits(max_keepalive_connections=0)
HISTORY = " ".join(
    f"Clause {i}: the tenant keeps the garden tidy, pays rent on the first of the month, "
    "and tells the landlord about repairs."
    for i in range(40)
)


@dataclass
class Server:
    name: str
    url: str
    sessions: bool  # Keep's sessions; llama-server has none
    headers: dict[str, str] = field(default_factory=dict)


@contextmanager
def keep_server(name: str, **settings: str) -> Iterator[Server]:
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="keep-bench-"))  # its own journal and admin socket
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_")}
    env |= {
        "KEEP_STATE_DIR": str(state),
        "KEEP_ADMIN_SOCKET": str(state / "admin.sock"),
        "KEEP_DEV_API_KEY": KEY,
        "KEEP_API_KEY_HASHES": f'["{hashlib.sha256(KEY_B.encode()).hexdigest()}"]',
        "KEEP_LOG_LEVEL": "warning",
        "KEEP_N_THREADS": str(THREADS),
        **{f"KEEP_{k.upper()}": v for k, v in settings.items()},
    }
    cmd = [str(Path(sys.executable).parent / "keep"), "serve", "--port", str(port)]
    server = Server(name, f"http://127.0.0.1:{port}", True, {"Authorization": f"Bearer {KEY}"})
    try:
        with serve(cmd, env, server.url + "/readyz", server.headers):
            yield server
    finally:
        shutil.rmtree(state, ignore_errors=True)


@contextmanager
def reference_server(slots: int, ctx_per_slot: int) -> Iterator[Server]:
    """llama-server with Keep's slots, context per slot and threads; its defaults otherwise."""
    pin = DEFAULT_MODELS[0]
    model = verify(pin.name, pin.path, pin.sha256)
    port = free_port()
    cmd = llama_server_command(
        model.path, port, threads=THREADS, slots=slots, ctx_per_slot=ctx_per_slot, extra=[]
    )
    print(
        f"  (llama-server: -np {slots} -c {slots * ctx_per_slot} -t {THREADS} --no-repack, its "
        f"defaults otherwise: unified KV, -b 2048 -ub 512, prompt cache on; keep: KEEP_SLOTS "
        f"{slots}, {ctx_per_slot} tokens per session, {THREADS} threads, n_batch 512)",
        flush=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_")}
    server = Server("llama-server", f"http://127.0.0.1:{port}", False)
    with serve(cmd, env, server.url + "/health"):
        yield server


def ttft(
    http: httpx.Client, server: Server, body: dict[str, Any], headers: dict[str, str]
) -> float:
    start = time.perf_counter()
    first = None
    stream = http.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json=body | {"stream": True},
        headers=server.headers | headers,
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


def follow_up(http: httpx.Client, server: Server, evict: bool) -> float:
    """One conversation's follow-up TTFT, with its KV left warm or crowded out first."""

    def session() -> dict[str, str]:
        if not server.sessions:
            return {}
        r = http.post(server.url + "/v1/sessions", headers=server.headers)
        return {"X-Keep-Session": r.json()["id"]}

    def say(messages: list[dict[str, str]], max_tokens: int, headers: dict[str, str]) -> str:
        r = http.post(
            server.url + "/v1/chat/completions",
            json=chat(messages, max_tokens),
            headers=server.headers | headers,
        )
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"])

    own = session()
    first = [{"role": "user", "content": HISTORY + "\nSummarise the lease in one sentence."}]
    answer = say(first, 24, own)
    others = []
    if evict:  # two other conversations, different enough that no server matches them to it
        for k in range(2):
            other = session()
            text = " ".join(f"Item {k}-{j} is a {['red', 'blue'][k]} box." for j in range(40))
            say([{"role": "user", "content": text}], 4, other)
            others.append(other)
    messages = [*first, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": "Who pays for repairs?"})
    took = ttft(http, server, chat(messages, 1), own)
    for gone in [own, *others]:
        if gone:
            sid = gone["X-Keep-Session"]
            http.delete(f"{server.url}/v1/sessions/{sid}", headers=server.headers)
    return took


def eviction(rounds: int) -> None:
    with ExitStack() as stack, httpx.Client(timeout=300, limits=FRESH) as http:
        servers = [
            stack.enter_context(
                keep_server(f"keep {kind}", slots="2", kv_eviction=kind, n_ctx_per_session="2048")
            )
            for kind in ("park", "drop")
        ]
        servers.append(stack.enter_context(reference_server(2, 2048)))
        figures: dict[str, tuple[list[float], list[float]]] = {s.name: ([], []) for s in servers}
        for server in servers:
            follow_up(http, server, False)  # warm-up
        for r in range(rounds):
            for server in servers[r % len(servers) :] + servers[: r % len(servers)]:
                warm, evicted = figures[server.name]
                warm.append(follow_up(http, server, False))
                evicted.append(follow_up(http, server, True))
    print("follow-up TTFT, ~1,000 tokens of history, 2 slots:")
    for name, (warm, evicted) in figures.items():
        ratios = [e / w for e, w in zip(evicted, warm, strict=True)]
        print(
            f"  {name:<13} warm {statistics.median(warm) * 1000:6.0f} ms, evicted "
            f"{statistics.median(evicted) * 1000:6.0f} ms; evicted/warm "
            f"{statistics.median(ratios):.2f}x (spread {min(ratios):.2f}-{max(ratios):.2f})"
        )
    ours, theirs = figures["keep park"][1], figures["llama-server"][1]
    per_round = [k / ref for k, ref in zip(ours, theirs, strict=True)]
    print(
        f"  keep parked / llama-server evicted: {statistics.median(per_round):.2f}x "
        f"(spread {min(per_round):.2f}-{max(per_round):.2f})"
    )


def fairness(server: Server, probes: int) -> float:
    """Client B's TTFT flooded over idle, printed; 48 of A's requests in flight on 8 slots."""
    a = {} if not server.sessions else server.headers
    b = {} if not server.sessions else {"Authorization": f"Bearer {KEY_B}"}
    probe = chat([{"role": "user", "content": "Name a colour."}], 8)
    flood = chat([{"role": "user", "content": "Write a long story about a ship."}], 64)
    quiet = Server(server.name, server.url, server.sessions)  # B's own key, not A's
    with httpx.Client(timeout=300, limits=FRESH) as http:
        ttft(http, quiet, probe, b)
        idle = statistics.median(ttft(http, quiet, probe, b) for _ in range(probes))
        stop = threading.Event()

        async def flooding() -> None:
            async with httpx.AsyncClient(
                base_url=server.url, headers=a, timeout=300, limits=FRESH
            ) as client:

                async def one() -> None:
                    while not stop.is_set():
                        await client.post("/v1/chat/completions", json=flood)

                await asyncio.gather(*(one() for _ in range(48)))

        flooder = threading.Thread(target=lambda: asyncio.run(flooding()))
        flooder.start()
        time.sleep(3)
        loaded = []
        for _ in range(probes):
            loaded.append(ttft(http, quiet, probe, b))
            time.sleep(0.3)
        stop.set()
        flooder.join()
    ratio = statistics.median(loaded) / idle
    print(
        f"  {server.name:<22} idle {idle * 1000:5.0f} ms, flooded "
        f"{statistics.median(loaded) * 1000:6.0f} ms (max {max(loaded) * 1000:6.0f}); "
        f"flooded/idle {ratio:.2f}x"
    )
    return ratio


def fairness_all(probes: int) -> None:
    print("fairness: client B's TTFT while client A keeps 48 requests in flight on 8 slots")
    with keep_server("keep (preempt)", n_ctx_per_session="1024") as server:
        fairness(server, probes)
    with keep_server("keep (no preempt)", n_ctx_per_session="1024", preempt="false") as server:
        fairness(server, probes)
    with reference_server(8, 1024) as server:
        fairness(server, probes)
    print("  target for keep (preempt): flooded/idle <= 2")


def burst() -> None:
    """64 at once on 8 slots, against each server's own TTFT for one request alone."""
    body = chat([{"role": "user", "content": "Write a poem."}], 16) | {"stream": True}

    async def run(server: Server, n: int) -> list[tuple[int, float]]:
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.headers, timeout=300, limits=limits
        ) as c:

            async def one() -> tuple[int, float]:
                start = time.perf_counter()
                first = float("nan")
                async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: {") and first != first:
                            first = time.perf_counter() - start
                return r.status_code, first

            return list(await asyncio.gather(*(one() for _ in range(n))))

    def measure(server: Server) -> tuple[float, list[tuple[int, float]]]:
        asyncio.run(run(server, 64))  # warm-up
        alone = statistics.median(asyncio.run(run(server, 1))[0][1] for _ in range(5))
        return alone, asyncio.run(run(server, 64))

    print("burst: 64 concurrent streams on 8 slots, max_tokens 16")
    with keep_server("keep", n_ctx_per_session="1024") as keep:
        ours = measure(keep)
    with reference_server(8, 1024) as ref:
        theirs = measure(ref)
    for name, (alone, results) in (("keep", ours), ("llama-server", theirs)):
        ok = sum(code == 200 for code, _ in results)
        times = sorted(t for _, t in results)
        median = statistics.median(times)
        print(
            f"  {name:<13} {ok}/64 answered; TTFT median {median * 1000:.0f} ms, max "
            f"{times[-1] * 1000:.0f} ms; alone {alone * 1000:.0f} ms, so the burst's median "
            f"is {median / alone:.1f}x its own single request"
        )
    ratio = statistics.median(t for _, t in ours[1]) / statistics.median(t for _, t in theirs[1])
    print(f"  keep/llama-server median TTFT in the burst: {ratio:.2f}x")


def thousand() -> None:
    """The issue's acceptance at full size, on the defaults, through one key."""

    async def run(server: Server) -> None:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.headers, timeout=600, limits=limits
        ) as http:
            few = await open_many(http, 8)  # the reference: as many sessions as slots
            few_took = await passes(http, MODEL, few, 2, concurrency=24)
            await delete_and_count_receipts(http, few)
            start = time.monotonic()
            convs = await open_many(http, 1000)
            opened = time.monotonic() - start
            over = (await http.post("/v1/sessions")).status_code
            took = await passes(http, MODEL, convs, 2, concurrency=24)
            named = [sum(c.named[t] for c in convs) for t in (0, 1)]
            cited = sum(c.cited[0] for c in convs)
            foreign = sum(c.foreign for c in convs)
            added, right = await delete_and_count_receipts(http, convs)
        per_turn = [t / 1000 for t in took]
        few_per_turn = statistics.mean(few_took) / 8
        print(
            f"thousand sessions on the defaults: opened with a document each in {opened:.0f} s "
            f"(the 1,001st: {over}); passes of 1,000 turns took {took[0]:.0f} s and "
            f"{took[1]:.0f} s (idle TTL 600 s)\n"
            f"  turn 1 named its own year {named[0]}/1000, turn 2 {named[1]}/1000; first turns "
            f"citing their own document {cited}/1000, foreign citations {foreign}; receipts "
            f"added {added}, counting exactly their session's turns {right}/1000\n"
            f"  time per turn (24 at a time) {per_turn[0] * 1000:.0f} / "
            f"{per_turn[1] * 1000:.0f} ms against {few_per_turn * 1000:.0f} ms with 8 sessions "
            f"on 8 slots: {statistics.mean(per_turn) / few_per_turn:.2f}x"
        )

    with keep_server("keep") as server:
        asyncio.run(run(server))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["eviction", "fairness", "burst", "thousand"])
    args = parser.parse_args()
    if args.only in (None, "eviction"):
        eviction(args.rounds)
    if args.only in (None, "fairness"):
        fairness_all(args.rounds * 2)
    if args.only in (None, "burst"):
        burst()
    if args.only in (None, "thousand"):
        thousand()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
