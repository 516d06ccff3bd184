"""What prompt-lookup decoding gains, and what it costs where there is nothing to copy.

Two `keep serve` processes, one with KEEP_LOOKUP_DRAFT=0 (the reference)
and one with drafts on, answer the same greedy non-streaming chat requests, interleaved, the
first server alternating. Both get the same settings (slots, threads, context per session)
but for the drafts. For each prompt the bench prints both servers' median request time and
their ratio with its spread; every pair of answers must be identical, or the bench fails.
The prompts: a retrieval-style answer (passages in the prompt, as Keep's RAG puts them there,
and a question whose answer copies them), a verbatim copy, a free essay and a short question,
then 8 concurrent requests of the essay, with each server's own scaling (8 essays at once
over one alone), so that a reference held back shows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_vs_llama_server import KEY, PROMPT, free_port, serve
from keep.settings import DEFAULT_MODELS

PASSAGES = [
    "[1] The Harbour Street clinic opens at eight in the morning on weekdays and at ten on "
    "Saturdays. It is closed on Sundays and public holidays.",
    "[2] Patients must bring their referral letter, a photo identity card and a list of the "
    "medicines they take. Parking is available behind the pharmacy on Mill Lane.",
    "[3] Appointments can be changed by telephone until noon on the day before the visit. "
    "Missed appointments are rebooked at the next free slot.",
]
RAG = (
    "Answer the question by quoting, word for word, each sentence of the passages that "
    "answers it, with the passage's number.\n\n"
    + "\n".join(PASSAGES)
    + "\n\nQuestion: When is the clinic open, what must patients bring, and how can they "
    "change an appointment?"
)
COPY = "Copy these lines exactly.\n\n" + "\n".join(PASSAGES)
PROMPTS = {
    "rag answer": RAG,
    "verbatim copy": COPY,
    "free essay": PROMPT,
    "short question": "Name three colours.",
}


AUTH = {"Authorization": f"Bearer {KEY}"}


def body(text: str, tokens: int) -> dict[str, object]:
    """A greedy chat request of one user message."""
    return {"model": DEFAULT_MODELS[0].name, "temperature": 0, "max_tokens": tokens,
            "messages": [{"role": "user", "content": text}]}  # fmt: skip


def chat(url: str, text: str, tokens: int) -> tuple[float, str, int]:
    start = time.perf_counter()
    response = httpx.post(url + "/v1/chat/completions", json=body(text, tokens), headers=AUTH,
                          timeout=300)  # fmt: skip
    response.raise_for_status()
    elapsed = time.perf_counter() - start
    data = response.json()
    return elapsed, data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"]


async def concurrent(url: str, tokens: int, n: int) -> tuple[float, list[str]]:
    async def one(client: httpx.AsyncClient, i: int) -> str:
        payload = body(f"{PROMPT} (Reader {i}.)", tokens)
        r = await client.post(url + "/v1/chat/completions", json=payload, headers=AUTH)
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"])

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        texts = await asyncio.gather(*(one(client, i) for i in range(n)))
        return time.perf_counter() - start, list(texts)


def row(label: str, tokens: str, times: dict[str, list[float]], same: bool) -> None:
    """One line: both servers' median time, and the median and spread of on/off per run."""
    ratios = [b / a for a, b in zip(times["off"], times["on"], strict=True)]
    off, on = (statistics.median(times[k]) * 1000 for k in ("off", "on"))
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
    flag = "" if same else "  TEXT DIFFERS"
    ratio = statistics.median(ratios)
    print(f"{label:<16}{tokens:>7}{off:>9.0f}{on:>9.0f}{ratio:>7.2f}x  {spread}{flag}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--draft", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_")}
    env |= {"KEEP_DEV_API_KEY": KEY, "KEEP_MAX_TOKENS_CAP": str(args.tokens),
            "KEEP_N_CTX_PER_SESSION": "1024", "KEEP_LOG_LEVEL": "warning",
            "KEEP_CLIENT_MAX_REQUESTS": "64", "KEEP_CLIENT_MAX_SESSIONS": "64"}  # fmt: skip
    keep = str(Path(sys.executable).parent / "keep")
    ports = {"off": free_port(), "on": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    own = {}  # each server its own journal and admin socket
    for name, draft in (("off", "0"), ("on", str(args.draft))):
        state = Path(tempfile.mkdtemp(prefix="keep-bench-"))
        own[name] = env | {"KEEP_LOOKUP_DRAFT": draft, "KEEP_STATE_DIR": str(state),
                           "KEEP_ADMIN_SOCKET": str(state / "admin.sock")}  # fmt: skip
    failed = False
    with (
        serve([keep, "serve", "--port", str(ports["off"])], own["off"], urls["off"] + "/readyz",
              AUTH),
        serve([keep, "serve", "--port", str(ports["on"])], own["on"], urls["on"] + "/readyz",
              AUTH),
    ):  # fmt: skip
        for url in urls.values():  # warm-up
            chat(url, "Hello.", 8)
        head = f"max {args.tokens} tokens, KEEP_LOOKUP_DRAFT={args.draft} against 0"
        print(f"lookup: SmolLM2-135M Q4_1, CPU, greedy chat, {head}, {args.runs} interleaved runs")
        print(f"{'prompt':<16}{'tokens':>7}{'off ms':>9}{'on ms':>9}{'on/off':>8}  spread")
        alone: dict[str, list[float]] = {}
        for label, text in PROMPTS.items():
            times: dict[str, list[float]] = {"off": [], "on": []}
            answers: dict[str, set[str]] = {"off": set(), "on": set()}
            n = 0
            for r in range(args.runs):
                order = ("off", "on") if r % 2 == 0 else ("on", "off")
                for name in order:
                    elapsed, answer, n = chat(urls[name], text, args.tokens)
                    times[name].append(elapsed)
                    answers[name].add(answer)
            same = answers["off"] == answers["on"] and len(answers["off"]) == 1
            failed |= not same
            row(label, str(n), times, same)
            if text == PROMPT:
                alone = times
        times = {"off": [], "on": []}
        texts: dict[str, list[str]] = {}
        for r in range(max(1, args.runs // 2)):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for name in order:
                elapsed, texts[name] = asyncio.run(
                    concurrent(urls[name], args.tokens, args.concurrency)
                )
                times[name].append(elapsed)
        same = texts["off"] == texts["on"]
        failed |= not same
        row(f"{args.concurrency} at once", "", times, same)
        for name in ("off", "on"):
            scaling = args.concurrency * statistics.median(alone[name])
            scaling /= statistics.median(times[name])
            print(f"drafts {name} scaling: {args.concurrency} essays at once against one alone, "
                  f"{scaling:.2f}x the throughput")  # fmt: skip
    print("identical text on every prompt" if not failed else "FAIL: drafted text differs")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
