"""What logprobs cost: single-stream decode with `logprobs` off, on, and with 5 alternatives.

The reference is the same `keep serve` in the same run with logprobs off, so the ratio is the
price of the feature alone; interleaved runs, medians. A request without logprobs pays only a
branch per token, so its figure doubles as a check that it did not get slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from bench.engine_vs_llama_server import KEY, PROMPT, eog_tokens, free_port, one_stream, serve
from inference.registry import verify
from keep.settings import DEFAULT_MODELS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    pin = DEFAULT_MODELS[0]
    model = verify(pin.name, pin.path, pin.sha256)
    bans = {str(t): -100.0 for t in eog_tokens(model.path)}
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_")}
    env |= {
        "KEEP_DEV_API_KEY": KEY,
        "KEEP_MAX_TOKENS_CAP": str(args.tokens),
        "KEEP_N_CTX_PER_SESSION": "512",
        "KEEP_LOG_LEVEL": "warning",
    }
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {KEY}"}
    base = {
        "model": pin.name,
        "prompt": PROMPT,
        "max_tokens": args.tokens,
        "temperature": 0,
        "logit_bias": bans,
        "stream": True,
    }
    variants = {
        "off": base,
        "logprobs 0": base | {"logprobs": 0},
        "logprobs 5": base | {"logprobs": 5},
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cmd = [str(Path(sys.executable).parent / "keep"), "serve", "--port", str(port)]
    with serve(cmd, env, url + "/readyz", auth):
        for body in variants.values():  # warm-up
            one_stream(url + "/v1/completions", body, auth, args.tokens)
        for _ in range(args.runs):
            for name, body in variants.items():
                run = one_stream(url + "/v1/completions", body, auth, args.tokens)
                rates[name].append(run.decode_tok_s)
    off = statistics.median(rates["off"])
    print(f"logprobs: SmolLM2-135M Q4_1, CPU, {args.tokens} tokens, median of {args.runs}")
    for name, values in rates.items():
        rate = statistics.median(values)
        per_token_ms = (1 / rate - 1 / off) * 1000
        print(
            f"{name:<12}{rate:>8.1f} tok/s {rate / off:>6.2f}x of off"
            f"  ({per_token_ms:+.2f} ms a token; spread {min(values):.1f}-{max(values):.1f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
