"""What systemd does at `systemctl stop`: SIGTERM to `keep serve`. In-flight streams finish,
every open session is torn down and its receipt written, and the process exits 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_KEY, chat_body, free_port, start_server


def test_sigterm_drains_a_stream_and_loses_no_receipt(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"KEEP_STATE_DIR": str(state), "KEEP_ADMIN_SOCKET": str(tmp_path / "a.sock")}
    server = start_server(tmp_path, free_port(), env=env)
    auth = {"Authorization": f"Bearer {TEST_KEY}"}
    try:
        session = httpx.post(f"{server.base_url}/v1/sessions", headers=auth).json()["id"]
        lines: list[str] = []
        started = threading.Event()

        def stream() -> None:
            body = chat_body("Write a long story about a lighthouse.", max_tokens=200, stream=True)
            with httpx.stream(
                "POST",
                f"{server.base_url}/v1/chat/completions",
                json=body,
                headers=auth,
                timeout=120,
            ) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        lines.append(line)
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        server.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        reader.join(timeout=150)
        assert not reader.is_alive()
        # uvicorn re-raises the signal once it has shut down; systemd counts death by
        # SIGTERM as a clean stop.
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
        drained_in = time.monotonic() - sent
    finally:
        if server.process.poll() is None:
            server.process.kill()
    # The stream ran to its end: a finish reason, then [DONE].
    assert lines[-1] == "data: [DONE]"
    finish = [json.loads(x[6:])["choices"][0].get("finish_reason") for x in lines[:-1]]
    assert finish[-1] == "length"
    assert len(lines) > 100
    # Two receipts: the stream's ephemeral session and the open session, closed at stop.
    receipts = [
        json.loads(x)["receipt"] for x in (state / "receipts.jsonl").read_text().splitlines()
    ]
    assert {r["session_id"] for r in receipts} >= {session}
    assert len(receipts) == 2
    assert drained_in < 150
