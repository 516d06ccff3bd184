"""Keep against llama-server on the same GGUF, threads and prompt, measured in one run.

Both servers are driven over HTTP with streaming on: greedy decoding, every end-of-generation
token banned through logit_bias (so each run yields exactly N tokens), prompt caching off on
llama-server. Reported per server: time to first token and single-stream decode tokens/s
(medians of interleaved runs), and aggregate tokens/s with 1, 4, 8 and 16 concurrent streams
(generated tokens over wall time), each with the ratio Keep/llama-server.
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

from bench.llama_server import llama_server
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 8, 16])
    # Keep's portable llama.cpp (every CPU variant, the best loaded at start) may not cost
    # more than this against llama-server built -march=native from the same sources.
    parser.add_argument("--single-stream-floor", type=float, default=0.97)
    args = parser.parse_args()

    pin = DEFAULT_MODELS[0]
    model = verify(pin.name, pin.path, pin.sha256)
    binary = llama_server()
    bans = {str(t): -100.0 for t in eog_tokens(model.path)}
    ctx = 512  # per session: the prompt (~60 tokens) plus the completion
    slots = max(args.concurrency)
    body = {
        "model": pin.name,
        "prompt": PROMPT,
        "max_tokens": args.tokens,
        "temperature": 0,
        "logit_bias": bans,
        "stream": True,
    }
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
        "KEEP_LOG_LEVEL": "warning",
    }
    keep_cmd = [str(Path(sys.executable).parent / "keep"), "serve", "--port", str(keep_port)]
    ref_cmd = [
        str(binary),
        "-m",
        str(model.path),
        "--host",
        "127.0.0.1",
        "--port",
        str(ref_port),
        "-t",
        str(args.threads),
        "-tb",
        str(args.threads),
        # The same slots and context per slot as Keep: llama-server splits -c among its -np
        # slots. Everything else (unified KV, batch sizes) is left at llama-server's defaults.
        "-c",
        str(ctx * slots),
        "-np",
        str(slots),
        "-ngl",
        "0",
        "--no-webui",
        "--cache-reuse",
        "0",
        # Keep runs without llama.cpp's extra buffer types (KEEP_LLAMA_EXTRA_BUFFERS), whose
        # AMX kernels die with SIGILL on the Sapphire Rapids VMs measured here: the same here.
        "--no-repack",
    ]
    keep_runs: list[Run] = []
    ref_runs: list[Run] = []
    keep_url = f"http://127.0.0.1:{keep_port}"
    ref_url = f"http://127.0.0.1:{ref_port}"
    with (
        serve(keep_cmd, keep_env, keep_url + "/readyz", {"Authorization": f"Bearer {KEY}"}),
        serve(ref_cmd, env, ref_url + "/health"),
    ):
        auth = {"Authorization": f"Bearer {KEY}"}
        ref_body = {**body, "cache_prompt": False}
        one_stream(keep_url + "/v1/completions", body, auth, args.tokens)  # warm-up
        one_stream(ref_url + "/v1/completions", ref_body, {}, args.tokens)
        for _ in range(args.runs):
            keep_runs.append(one_stream(keep_url + "/v1/completions", body, auth, args.tokens))
            ref_runs.append(one_stream(ref_url + "/v1/completions", ref_body, {}, args.tokens))
        agg: dict[int, tuple[float, float]] = {}
        for c in args.concurrency:
            k = aggregate(keep_url + "/v1/completions", body, auth, args.tokens, c)
            r = aggregate(ref_url + "/v1/completions", ref_body, {}, args.tokens, c)
            agg[c] = (k, r)

    def med(runs: list[Run], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    k_ttft, r_ttft = med(keep_runs, "ttft_s"), med(ref_runs, "ttft_s")
    k_tps, r_tps = med(keep_runs, "decode_tok_s"), med(ref_runs, "decode_tok_s")
    print(
        f"engine_vs_llama_server: SmolLM2-135M Q4_1, CPU, {args.threads} threads, "
        f"{args.tokens} tokens, median of {args.runs}"
    )
    print(f"{'figure':<28}{'keep':>12}{'llama-server':>14}{'ratio':>9}")
    print(f"{'single-stream decode tok/s':<28}{k_tps:>12.1f}{r_tps:>14.1f}{k_tps / r_tps:>8.2f}x")
    print(
        f"{'time to first token ms':<28}{k_ttft * 1000:>12.1f}{r_ttft * 1000:>14.1f}"
        f"{k_ttft / r_ttft:>8.2f}x"
    )
    for c, (k, r) in agg.items():
        label = f"aggregate tok/s, {c} streams"
        print(f"{label:<28}{k:>12.1f}{r:>14.1f}{k / r:>8.2f}x")
    # Each server's own scaling, so that a reference held back (one slot, say) shows itself.
    low, high = min(agg), max(agg)
    for name, side in (("keep", 0), ("llama-server", 1)):
        scaling = agg[high][side] / agg[low][side]
        print(f"{name} scaling: aggregate at {high} streams / at {low} = {scaling:.2f}x")
    ratio, floor = k_tps / r_tps, args.single_stream_floor
    variants = ", ".join(cpu_variants()) or "none (a native build)"
    print(f"keep's llama.cpp CPU variants: {variants}; llama-server: -march=native")
    verdict = "PASS" if ratio >= floor else "FAIL"
    print(f"single-stream floor {floor:.2f}x: {ratio:.2f}x {verdict}")
    return 0 if ratio >= floor else 1


if __name__ == "__main__":
    raise SystemExit(main())
