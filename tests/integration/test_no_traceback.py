"""No traceback, ever: a body no handler expects gets a 4xx naming its field, and an exception
nothing handles gets the 500 envelope with only its type name logged, never its text."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.responses import StreamingResponse

from appliance.app import create_app
from inference.engine import Engine
from rag.embedder import Embedder
from tests.conftest import MODEL, TEST_KEY, LiveServer, free_port, make_settings

CANARY = "CANARY-SURROGATE-5b8e21"
# Sent as the JSON escape, exactly as a hostile client would write it: `"\ud800"`.
LONE = "\\ud800"
EMBEDDER = "all-minilm-l6-v2"

SURROGATE_BODIES: list[tuple[str, str, str]] = [
    (
        "chat",
        "/v1/chat/completions",
        f'{{"model": "{MODEL}", "max_tokens": 2, '
        f'"messages": [{{"role": "user", "content": "{CANARY} {LONE}"}}]}}',
    ),
    (
        "chat-text-part",
        "/v1/chat/completions",
        f'{{"model": "{MODEL}", "max_tokens": 2, "messages": [{{"role": "user", '
        f'"content": [{{"type": "text", "text": "{CANARY} {LONE}"}}]}}]}}',
    ),
    (
        "completions",
        "/v1/completions",
        f'{{"model": "{MODEL}", "max_tokens": 2, "prompt": "{CANARY} {LONE}"}}',
    ),
    ("embeddings", "/v1/embeddings", f'{{"model": "{EMBEDDER}", "input": "{CANARY} {LONE}"}}'),
    (
        "embeddings-list",
        "/v1/embeddings",
        f'{{"model": "{EMBEDDER}", "input": ["ok", "{CANARY} {LONE}"]}}',
    ),
    (
        "documents",
        "/v1/sessions/{session}/documents",
        f'{{"documents": [{{"name": "a.txt", "text": "{CANARY} {LONE}"}}]}}',
    ),
]
PARAMS = {
    "chat": "messages[0].content",
    "chat-text-part": "messages[0].content",  # a union: pydantic names its first branch
    "completions": "prompt",
    "embeddings": "input",
    "embeddings-list": "input",
    "documents": "documents[0].text",
}


@pytest.mark.parametrize("case", SURROGATE_BODIES, ids=[c[0] for c in SURROGATE_BODIES])
def test_a_lone_surrogate_gets_400_naming_its_field_and_no_traceback(
    keep_server: LiveServer, case: tuple[str, str, str]
) -> None:
    name, path, body = case
    auth = {"Authorization": f"Bearer {keep_server.key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=keep_server.base_url, headers=auth, timeout=60) as http:
        session = http.post("/v1/sessions").json()["id"]
        try:
            response = http.post(path.format(session=session), content=body.encode())
        finally:
            http.delete(f"/v1/sessions/{session}")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(PARAMS[name])
    assert CANARY not in response.text
    log = keep_server.log()
    assert "Traceback" not in log
    assert CANARY not in log
    assert "unhandled" not in log


@pytest.fixture
def boom_server(engine: Engine, embedder: Embedder) -> Iterator[str]:
    """The real app under a real uvicorn, with two routes that fail as no handler expects:
    one before its response starts, one in the middle of a stream."""
    app = create_app(make_settings(), engine=engine, embedder=embedder)

    async def before() -> None:
        raise RuntimeError(f"{CANARY} before the response")

    async def midway() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            raise UnicodeEncodeError("utf-8", CANARY, 0, 1, "surrogates not allowed")

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app.add_api_route("/test/before", before, methods=["GET"])
    app.add_api_route("/test/midway", midway, methods=["GET"])
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


class Collected(logging.Handler):
    """Every record the process logs, formatted as a server's log would show it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def collected() -> Iterator[Collected]:
    handler = Collected()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def _logged(collected: Collected, expected: str) -> tuple[str, list[Any]]:
    """What was logged once `expected` is: the server logs just after the response is sent."""
    deadline = time.monotonic() + 5
    while not any(expected in line for line in collected.lines) and time.monotonic() < deadline:
        time.sleep(0.01)
    text = "\n".join(collected.lines)
    return text, [r for r in collected.records if r.exc_info or r.exc_text or r.stack_info]


def test_an_unhandled_exception_gets_the_500_envelope_and_only_its_type_is_logged(
    collected: Collected, boom_server: str
) -> None:
    auth = {"Authorization": f"Bearer {TEST_KEY}"}
    response = httpx.get(boom_server + "/test/before", headers=auth, timeout=30)
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "the request could not be completed",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    text, with_traceback = _logged(collected, "unhandled RuntimeError")
    assert "unhandled RuntimeError on GET /test/before" in text
    assert with_traceback == []
    assert "Traceback" not in text
    assert CANARY not in text
    # The server goes on answering.
    assert httpx.get(boom_server + "/v1/models", headers=auth, timeout=30).status_code == 200


def test_an_exception_mid_stream_ends_the_stream_and_only_its_type_is_logged(
    collected: Collected, boom_server: str
) -> None:
    auth = {"Authorization": f"Bearer {TEST_KEY}"}
    with httpx.stream("GET", boom_server + "/test/midway", headers=auth, timeout=30) as response:
        assert response.status_code == 200
        received = b"".join(response.iter_bytes())  # a clean end of the chunked body
    assert received == b"data: first\n\n"
    text, with_traceback = _logged(collected, "unhandled UnicodeEncodeError")
    assert "unhandled UnicodeEncodeError on GET /test/midway" in text
    assert with_traceback == []
    assert "Traceback" not in text
    assert CANARY not in text
