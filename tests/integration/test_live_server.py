"""A real `keep serve` process, driven by the official openai client and by raw HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODEL, SYSTEM, LiveServer, free_port, start_server, stop_server


@pytest.fixture
def ai(keep_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=keep_server.base_url + "/v1", api_key=keep_server.key)


def test_openai_client_gets_paris(ai: openai.OpenAI) -> None:
    completion = ai.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=32,
    )
    assert "Paris" in (completion.choices[0].message.content or "")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0


def test_openai_client_streams_with_usage(ai: openai.OpenAI) -> None:
    stream = ai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 12


def test_openai_client_lists_models_and_completes_text(ai: openai.OpenAI) -> None:
    assert [m.id for m in ai.models.list()] == [MODEL]
    completion = ai.completions.create(model=MODEL, prompt="One, two,", max_tokens=4)
    assert completion.choices[0].text
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 4


def test_openai_client_reads_logprobs_sync_async_and_streamed(ai: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "temperature": 0,
        "max_tokens": 8,
        "logprobs": True,
        "top_logprobs": 3,
    }
    whole = ai.chat.completions.create(**request)
    content = whole.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    assert whole.usage is not None
    assert len(content) == whole.usage.completion_tokens
    assert all(t.logprob <= 0 and t.top_logprobs[0].token == t.token for t in content)
    streamed = [
        entry
        for chunk in ai.chat.completions.create(**request, stream=True)
        for choice in chunk.choices
        if choice.logprobs is not None and choice.logprobs.content
        for entry in choice.logprobs.content
    ]
    assert [t.token for t in streamed] == [t.token for t in content]

    async def asynchronous() -> list[str]:
        async with openai.AsyncOpenAI(base_url=str(ai.base_url), api_key=ai.api_key) as client:
            answer = await client.chat.completions.create(**request)
            assert answer.choices[0].logprobs is not None
            return [t.token for t in answer.choices[0].logprobs.content or []]

    assert asyncio.run(asynchronous()) == [t.token for t in content]
    legacy = ai.completions.create(model=MODEL, prompt="One, two,", max_tokens=4, logprobs=2)
    assert legacy.choices[0].logprobs is not None
    assert "".join(legacy.choices[0].logprobs.tokens or []) == legacy.choices[0].text


def test_openai_client_raises_its_own_errors(ai: openai.OpenAI, keep_server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError):
        ai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.create(model=MODEL, messages=[], max_tokens=2)
    bad = openai.OpenAI(base_url=keep_server.base_url + "/v1", api_key="keep-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_logs_carry_no_content(keep_server: LiveServer) -> None:
    canary = "CANARY-LOG-91f3a7"
    headers = {"Authorization": f"Bearer {keep_server.key}"}
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Repeat: {canary}"}],
        "max_tokens": 16,
    }
    httpx.post(
        keep_server.base_url + "/v1/chat/completions",
        json=body,
        headers=headers,
        timeout=60,
    )
    httpx.post(
        keep_server.base_url + "/v1/chat/completions",
        json={**body, "temperature": canary},
        headers=headers,
        timeout=60,
    )
    httpx.post(
        keep_server.base_url + "/v1/chat/completions",
        json={
            **body,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "pattern": canary}},
            },
        },
        headers=headers,
        timeout=60,
    )
    log = keep_server.log()
    # The audit log is there...
    assert '"method":"POST","route":"/v1/chat/completions","model":"' in log
    assert '"status":200' in log
    assert canary not in log  # ...and carries no content
    assert "Repeat" not in log


def test_context_setting_reaches_the_engine(tmp_path: Path) -> None:
    server = start_server(tmp_path, free_port(), {"KEEP_N_CTX_PER_SESSION": "256"})
    try:
        headers = {"Authorization": f"Bearer {server.key}"}
        over = httpx.post(
            server.base_url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "word " * 300}]},
            headers=headers,
            timeout=60,
        )
        assert over.status_code == 400
        assert over.json()["error"]["code"] == "context_length_exceeded"
    finally:
        stop_server(server)


def test_dev_key_banner_prints_a_working_curl_command(tmp_path: Path) -> None:
    server = start_server(tmp_path, free_port(), args=("--dev-key",))
    try:
        # The banner follows readiness (the app's on_ready), so it may lag the probe a little.
        deadline = time.monotonic() + 30
        while "}]}'\n" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        banner = server.log()
        keys = re.findall(r"export KEEP_API_KEY=(keep-\S+)", banner)
        assert len(keys) == 1
        assert banner.count(keys[0]) == 2  # the export line and the curl command, nowhere else
        start = banner.index("  curl -s ")
        command = banner[start:].split("\n\n")[0]
        command = "\n".join(
            line for line in command.splitlines() if line.startswith(("  curl", "    -"))
        )
        result = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=120, check=True
        )
        assert "Paris" in json.loads(result.stdout)["choices"][0]["message"]["content"]
        auth = {"Authorization": f"Bearer {keys[0]}"}
        assert httpx.get(server.base_url + "/v1/models", headers=auth).status_code == 200
    finally:
        stop_server(server)
