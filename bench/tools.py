"""What tool calling costs: decode speed of a call generated under its grammar, against the
same server writing text for the same prompt (`tool_choice: "none"`), and the prompt tokens
the tool listing adds.

Both sides run in one `keep serve`, in one session (so the prompt is reused and each request
is nearly all decode), interleaved, medians of `--runs`. The grammar's cost per
token is the difference of the two rates; requests without tools do not touch the grammar
code at all (`bench/engine_vs_llama_server.py` measures those against llama-server).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

from bench.engine_vs_llama_server import KEY, free_port, serve
from keep.settings import DEFAULT_MODELS

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER},
    }
]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def timed(url: str, body: dict[str, object], auth: dict[str, str]) -> tuple[float, int]:
    """Completion tokens a second over the whole request, and the completion tokens. The
    session already holds the prompt, so the request is nearly all decode; a stream would
    not do, as a call's first delta waits for its name."""
    start = time.perf_counter()
    response = httpx.post(url, json=body, headers=auth, timeout=300)
    response.raise_for_status()
    tokens = int(response.json()["usage"]["completion_tokens"])
    return tokens / (time.perf_counter() - start), tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    pin = DEFAULT_MODELS[0]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_")}
    env |= {"KEEP_DEV_API_KEY": KEY, "KEEP_N_CTX_PER_SESSION": "1024", "KEEP_LOG_LEVEL": "warning"}
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {KEY}"}
    cmd = [str(Path(sys.executable).parent / "keep"), "serve", "--port", str(port)]
    common = {
        "model": pin.name,
        "messages": QUESTION,
        "temperature": 0,
    }
    with serve(cmd, env, url + "/readyz", auth):
        session = httpx.post(url + "/v1/sessions", headers=auth).json()["id"]
        auth_s = auth | {"x-keep-session": session}
        chat = url + "/v1/chat/completions"
        call = common | {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
        _, n = timed(chat, call, auth_s)  # warm-up, and the call's length
        text = common | {"tools": TOOLS, "tool_choice": "none", "max_tokens": n}
        rates: dict[str, list[float]] = {"call": [], "text": []}
        for _ in range(args.runs):
            rates["call"].append(timed(chat, call, auth_s)[0])
            rates["text"].append(timed(chat, text, auth_s)[0])
        bare = httpx.post(chat, json=common | {"max_tokens": 1}, headers=auth)
        listed = httpx.post(chat, json=text | {"max_tokens": 1}, headers=auth)
        prompt = bare.json()["usage"]["prompt_tokens"], listed.json()["usage"]["prompt_tokens"]
    call_rate, text_rate = (statistics.median(v) for v in rates.values())
    print(f"tools: SmolLM2-135M Q4_1, CPU, one {n}-token call, median of {args.runs}")
    for name, values in rates.items():
        print(
            f"{name:<6}{statistics.median(values):>8.1f} tok/s  (spread {min(values):.1f}-"
            f"{max(values):.1f})"
        )
    print(
        f"call/text {call_rate / text_rate:.2f}x; the grammar costs "
        f"{(1 / call_rate - 1 / text_rate) * 1000:+.2f} ms a token"
    )
    print(f"prompt: {prompt[0]} tokens bare, {prompt[1]} with one tool listed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
