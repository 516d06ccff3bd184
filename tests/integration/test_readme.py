"""The README's curl and Python examples, run exactly as printed against a real Keep."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, LiveServer, start_server, stop_server

README_PORT = 8080  # the examples name it, so the server must listen there


def blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    try:
        httpx.get(f"http://127.0.0.1:{README_PORT}/healthz", timeout=0.5)
    except httpx.TransportError:
        pass
    else:
        pytest.fail(f"port {README_PORT} is in use; stop whatever listens there to run this test")
    server = start_server(tmp_path_factory.mktemp("readme"), README_PORT)
    yield server
    stop_server(server)


def example_env(server: LiveServer) -> dict[str, str]:
    return {**os.environ, "KEEP_API_KEY": server.key}


def test_readme_has_the_two_commands_first() -> None:
    first = blocks("bash")[0]
    assert "make run" in first
    assert "make test" in first


def test_readme_curl_example_runs_as_printed(readme_server: LiveServer) -> None:
    curl = next(b for b in blocks("bash") if b.startswith("curl -s http://127.0.0.1:8080/v1/chat"))
    result = subprocess.run(
        ["bash", "-c", curl],
        env=example_env(readme_server),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    body = json.loads(result.stdout)
    assert "Paris" in body["choices"][0]["message"]["content"]


def test_readme_python_example_runs_as_printed(readme_server: LiveServer, tmp_path: Path) -> None:
    chat, tools = blocks("python")  # the tool-calling example continues the chat one
    script = tmp_path / "example.py"
    script.write_text(chat + "\n" + tools)
    result = subprocess.run(
        [sys.executable, str(script)],
        env=example_env(readme_server),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answer, call = result.stdout.split("\nget_weather ", 1)
    assert "Paris" in answer
    arguments = call.split("\n", 1)[0]
    assert set(json.loads(arguments)) == {"city", "unit"}


def test_readme_receipt_example_runs_as_printed(readme_server: LiveServer, tmp_path: Path) -> None:
    base, auth = readme_server.base_url, {"Authorization": f"Bearer {readme_server.key}"}
    session = httpx.post(base + "/v1/sessions", headers=auth).json()["id"]
    body = {"model": "smollm2-135m-instruct", "prompt": "Hello", "max_tokens": 2}
    httpx.post(base + "/v1/completions", json=body, headers={**auth, "X-Keep-Session": session})
    httpx.delete(f"{base}/v1/sessions/{session}", headers=auth)
    script = next(b for b in blocks("bash") if "keep verify" in b)
    # The block names .venv/bin/keep from the repository root; run it there, on a copy of
    # nothing but its own output files in tmp_path.
    result = subprocess.run(
        ["bash", "-c", f"cd {tmp_path} && ln -s {ROOT / '.venv'} .venv && {script}"],
        env={**example_env(readme_server), "SESSION": session},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"valid: session {session}" in result.stdout
