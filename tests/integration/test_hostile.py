"""Hostile response formats against a real `keep serve`: nothing of a client reaches the
process's stdout or stderr, and a grammar that dead-ends fails its request, not the process."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import (
    MODEL,
    TEST_KEY,
    LiveServer,
    ask,
    chat_body,
    free_port,
    start_server,
    stop_server,
)

# A string no character matches: the grammar's first step after the quote allows nothing.
DEAD_END = {"type": "string", "pattern": "^[^\\x00-\\U0010FFFF]$"}


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}


def post(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=60,
    )


def too_many_repetitions(canary: str) -> dict[str, Any]:
    """Converts to GBNF, but llama.cpp's parser refuses it and prints the grammar."""
    return {
        "type": "object",
        "properties": {canary: {"type": "string", "maxLength": 3000}},
        "required": [canary],
    }


LLAMA_PARSES = """
import json, sys
import llama_cpp
from llama_cpp.llama_grammar import json_schema_to_gbnf
from appliance.app import load_engine  # noqa: F401 - the path to the pinned model
from keep.settings import Settings
from inference.registry import verify
pin = Settings().model_pin()
path = verify(pin.name, pin.path, pin.sha256).path
params = llama_cpp.llama_model_default_params()
params.vocab_only = True
model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
vocab = llama_cpp.llama_model_get_vocab(model)
gbnf = json_schema_to_gbnf(sys.stdin.read())
assert not llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
"""


def test_nothing_of_a_client_reaches_stdout_or_stderr(tmp_path: Path) -> None:
    refused, compiled = f"kqr{secrets.token_hex(8)}", f"kqc{secrets.token_hex(8)}"
    # Limits opened wide so that the schema reaches llama.cpp's own parser.
    env = {"KEEP_SCHEMA_MAX_REPETITION": "100000", "KEEP_LOG_LEVEL": "info"}
    server = start_server(tmp_path, free_port(), env=env)
    try:
        body = chat_body(max_tokens=8, response_format=schema_format(too_many_repetitions(refused)))
        r = post(server, body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "response_format"
        good = {"type": "object", "properties": {compiled: {"enum": [compiled + "v"]}}}
        # Room for the whole object: two random hex canaries take a varying number of tokens.
        r = post(server, chat_body(max_tokens=120, response_format=schema_format(good)))
        assert r.status_code == 200, r.text
        assert compiled in r.json()["choices"][0]["message"]["content"]
    finally:
        stop_server(server)
    output = server.log_path.read_bytes()  # the process's stdout and stderr, together
    assert refused.encode() not in output
    assert compiled.encode() not in output
    # Positive controls: Keep's own log and banner still reach the same output ...
    assert b"Keep is ready" in output
    assert b"keep.inference: model" in output
    # ... and llama.cpp does print that grammar, canary included, where stderr is kept.
    control = subprocess.run(
        [sys.executable, "-c", LLAMA_PARSES],
        input=json.dumps(too_many_repetitions(refused)),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent.parent,
    )
    assert control.returncode == 0, control.stderr[-2000:]
    assert refused in control.stderr


def test_a_grammar_that_dead_ends_fails_its_request_and_the_process_serves_on(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path, free_port())
    try:
        body = chat_body(max_tokens=8, response_format=schema_format(DEAD_END))
        r = post(server, body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "response_format"
        assert "no next token" in error["message"]
        with httpx.stream(
            "POST",
            server.base_url + "/v1/chat/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            timeout=60,
        ) as stream:
            assert stream.status_code == 200
            events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["param"] == "response_format"
        assert server.process.poll() is None
        assert ask(server.base_url, server.key).status_code == 200
        models = httpx.get(
            server.base_url + "/v1/models", headers={"Authorization": f"Bearer {TEST_KEY}"}
        )
        assert models.json()["data"][0]["id"] == MODEL
    finally:
        stop_server(server)
