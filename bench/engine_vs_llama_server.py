"""Keep against llama-server on the same GGUF, threads, slots and prompt, in one run.

Both servers get the same slots, context per slot and threads, and are driven over HTTP,
greedy, with prompt caching off on llama-server, in two modes:
- streamed text completions with every end-of-generation token banned (each run yields
  exactly N tokens): single-stream decode and time to first token, and aggregate tokens/s
  at each concurrency;
- non-streaming chat completions with end-of-generation allowed: aggregate completion
  tokens/s at each concurrency.
Every figure is measured in interleaved rounds (the first server alternating); each is
printed as both servers' medians, the median of the per-round ratios Keep/llama-server and
their spread, with each server's own scaling, so that a reference held back shows itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.llama_server import command as llama_server_command
from inference.backends import cpu_variants
from inference.registry import verify
from keep.settings import DEFAULT_MODELS

KEY = "keep-bench-key-0123456789abcdef"
PROMPT = (
    "The history of the printing press begins in the fifteenth century, when movable type "
    "changed how knowledge travelled across Europe. Write a detailed essay about its effects "
    "on science, religion, commerce and everyday life, with examples from several countries."
)


@dataclass
class Run:
    ttft_s: float
    decode_tok_s: float


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float = 120,
    headers: dict[str, str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with status {process.returncode}")
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {url} did not become ready")


@contextmanager
def serve(
    cmd: list[str], env: dict[str, str], ready_url: str, headers: dict[str, str] | None = None
) -> Iterator[None]:
    """`headers`: Keep's /readyz needs a key, as every route of its API does."""
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(ready_url, process, headers=headers)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def eog_tokens(model_path: Path) -> list[int]:
    from llama_cpp import Llama

    vocab_model = Llama(str(model_path), vocab_only=True, verbose=False)
    vocab = vocab_model._model.vocab
    import llama_cpp

    n = llama_cpp.llama_vocab_n_tokens(vocab)
    return [t for t in range(n) if llama_cpp.llama_vocab_is_eog(vocab, t)]


def one_stream(url: str, body: dict[str, object], headers: dict[str, str], n: int) -> Run:
    start = time.perf_counter()
    first = last = 0.0
    pieces = 0
    with httpx.stream("POST", url, json=body, headers=headers, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                pieces += 1
    if not first:
        raise SystemExit(f"no tokens streamed from {url}")
    return Run(ttft_s=first - start, decode_tok_s=(n - 1) / max(last - first, 1e-9))


async def _aggregate_once(
    url: str, body: dict[str, object], headers: dict[str, str], n: int, concurrency: int
) -> float:
    async def one(client: httpx.AsyncClient, i: int) -> int:
        payload = {**body, "prompt": f"{PROMPT} (Reader {i}.)"}
        got = 0
        async with client.stream("POST", url, json=payload, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: {") and '"text": ""' not in line:
                    got += 1
        return got

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client, i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    return concurrency * n / elapsed


def aggregate(
    url: str, body: dict[str, object], headers: dict[str, str], n: int, concurrency: int
) -> float:
    return asyncio.run(_aggregate_once(url, body, headers, n, concurrency))


CHAT = [{"role": "user", "content": PROMPT}]


async def _chat_aggregate(
    url: str, body: dict[str, object], headers: dict[str, str], concurrency: int
) -> float:
    """Non-streaming chat, end-of-generation allowed: completion tokens over wall time."""

    async def one(client: httpx.AsyncClient, i: int) -> int:
        payload = {**body, "messages": [{"role": "user", "content": f"{PROMPT} (Reader {i}.)"}]}
        response = await client.post(url, json=payload, headers=headers)
        response.raise_for_status()
        return int(response.json()["usage"]["completion_tokens"])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        tokens = await asyncio.gather(*(one(client, i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    return sum(tokens) / elapsed


@dataclass
class Side:
    """One server as the bench drives it: base URL, auth headers, body extras."""

    url: str
    headers: dict[str, str]
    extra: dict[str, object]


def measure(
    mode: str, side: Side, args: argparse.Namespace, bans: dict[str, float]
) -> dict[str, float]:
    """One round's figures for one server in one mode."""
    out: dict[str, float] = {}
    if mode == "stream":
        body = {"prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0, "logit_bias": bans,
                "stream": True, **side.extra}  # fmt: skip
        url = side.url + "/v1/completions"
        runs = [one_stream(url, body, side.headers, args.tokens) for _ in range(args.runs)]
        out["single-stream decode tok/s"] = statistics.median(r.decode_tok_s for r in runs)
        out["time to first token ms"] = statistics.median(r.ttft_s for r in runs) * 1000
        for c in args.concurrency:
            out[f"aggregate tok/s, {c}"] = aggregate(url, body, side.headers, args.tokens, c)
    else:
        body = {"messages": CHAT, "max_tokens": args.tokens, "temperature": 0, **side.extra}
        url = side.url + "/v1/chat/completions"
        for c in args.concurrency:
            rate = asyncio.run(_chat_aggregate(url, body, side.headers, c))
            out[f"aggregate tok/s, {c}"] = rate
    return out


def report(
    mode: str, rounds: list[tuple[dict[str, float], dict[str, float]]], concurrency: list[int]
) -> dict[str, float]:
    """Each figure: both servers' medians, and the median and spread of per-round ratios."""
    label = {"stream": "streamed completions, end-of-generation banned",
             "chat": "non-streaming chat completions, end-of-generation allowed"}[mode]  # fmt: skip
    print(f"-- {label}, {len(rounds)} interleaved rounds")
    print(f"{'figure':<30}{'keep':>10}{'llama-server':>14}{'ratio':>8}  spread")
    medians: dict[str, float] = {}
    for figure in rounds[0][0]:
        keep = statistics.median(k[figure] for k, _ in rounds)
        ref = statistics.median(r[figure] for _, r in rounds)
        ratios = [k[figure] / r[figure] for k, r in rounds]
        ratio = statistics.median(ratios)
        medians[figure] = ratio
        print(f"{figure:<30}{keep:>10.1f}{ref:>14.1f}{ratio:>7.2f}x  "
              f"{min(ratios):.2f}-{max(ratios):.2f}")  # fmt: skip
    low, high = min(concurrency), max(concurrency)
    for name, side in (("keep", 0), ("llama-server", 1)):
        scaling = statistics.median(
            pair[side][f"aggregate tok/s, {high}"] / pair[side][f"aggregate tok/s, {low}"]
            for pair in rounds
        )
        print(f"{name} scaling: aggregate at {high} / at {low} = {scaling:.2f}x")
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3, help="single-stream runs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 8, 16, 32])
    parser.add_argument(
        "--modes", nargs="*", choices=["stream", "chat"], default=["stream", "chat"]
    )
    # Keep's portable llama.cpp (every CPU variant, the best loaded at start) may not cost
    # more than this against llama-server built -march=native from the same sources.
    parser.add_argument("--single-stream-floor", type=float, default=0.97)
    # Probes of the gap: extra llama-server flags (`--ref-arg=--no-kv-unified`), printed.
    parser.add_argument("--ref-arg", action="append", default=[])
    args = parser.parse_args()

    pin = DEFAULT_MODELS[0]
    model = verify(pin.name, pin.path, pin.sha256)
    bans = {str(t): -100.0 for t in eog_tokens(model.path)}
    ctx = 512  # per session: the prompt (~60 tokens) plus the completion
    slots = max(args.concurrency)
    keep_port, ref_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_")}
    keep_env = {
        **env,
        "KEEP_DEV_API_KEY": KEY,
        "KEEP_N_THREADS": str(args.threads),
        "KEEP_MAX_SESSIONS": str(slots),
        # One key drives every stream here, so its fair share is the whole appliance.
        "KEEP_CLIENT_MAX_SESSIONS": str(slots),
        "KEEP_CLIENT_MAX_REQUESTS": str(slots),
        "KEEP_N_CTX_PER_SESSION": str(ctx),
        "KEEP_MAX_TOKENS_CAP": str(args.tokens),
        "KEEP_N_BATCH": str(max(512, slots)),
        "KEEP_LOG_LEVEL": "warning",
    }
    keep_cmd = [str(Path(sys.executable).parent / "keep"), "serve", "--port", str(keep_port)]
    # The same slots, context per slot and threads as Keep; everything else is left at
    # llama-server's defaults, and printed below.
    ref_cmd = llama_server_command(
        model.path, ref_port, threads=args.threads, slots=slots, ctx_per_slot=ctx,
        extra=["--cache-reuse", "0", *args.ref_arg],
    )  # fmt: skip
    keep = Side(f"http://127.0.0.1:{keep_port}", {"Authorization": f"Bearer {KEY}"},
                {"model": pin.name})  # fmt: skip
    ref = Side(f"http://127.0.0.1:{ref_port}", {}, {"model": pin.name, "cache_prompt": False})
    results: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {
        m: [] for m in args.modes
    }
    with (
        serve(keep_cmd, keep_env, keep.url + "/readyz", keep.headers),
        serve(ref_cmd, env, ref.url + "/health"),
    ):
        for side in (keep, ref):  # warm-up
            body = {"prompt": PROMPT, "max_tokens": 8, "logit_bias": bans, "stream": True,
                    **side.extra}  # fmt: skip
            one_stream(side.url + "/v1/completions", body, side.headers, 8)
        for r in range(args.rounds):
            for mode in args.modes:
                # Interleaved, the first server alternating from round to round.
                first, second = (keep, ref) if r % 2 == 0 else (ref, keep)
                a = measure(mode, first, args, bans)
                b = measure(mode, second, args, bans)
                results[mode].append((a, b) if first is keep else (b, a))
    print(
        f"engine_vs_llama_server: SmolLM2-135M Q4_1, CPU, {args.threads} threads, "
        f"{args.tokens} tokens, {slots} slots of {ctx} tokens on both"
    )
    print("differs on purpose: llama-server keeps its defaults (unified KV, -b 2048 -ub 512);")
    print(f"  Keep runs kv_unified off (isolation) and n_batch = n_ubatch = {max(512, slots)}")
    if args.ref_arg:
        print(f"  llama-server also given: {' '.join(args.ref_arg)}")
    variants = ", ".join(cpu_variants()) or "none (a native build)"
    print(f"keep's llama.cpp CPU variants: {variants}; llama-server: -march=native")
    verdict = 0
    for mode in args.modes:
        medians = report(mode, results[mode], args.concurrency)
        if mode == "stream":
            ratio, floor = medians["single-stream decode tok/s"], args.single_stream_floor
            ok = ratio >= floor
            print(f"single-stream floor {floor:.2f}x: {ratio:.2f}x {'PASS' if ok else 'FAIL'}")
            verdict |= 0 if ok else 1
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
