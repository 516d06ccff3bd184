"""Shared fixtures: one real engine for the run, apps on it, and a real `keep serve`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from appliance.app import create_app, load_embedder, load_engine
from inference.engine import Engine
from keep.settings import DEFAULT_MODEL_NAME, Settings
from rag.embedder import Embedder
from tests import controlenv

ROOT = Path(__file__).resolve().parent.parent
KEEP = str(Path(sys.executable).parent / "keep")
TEST_KEY = "keep-test-key-0123456789abcdef"
MODEL = DEFAULT_MODEL_NAME

# The default Q4_1 SmolLM2-135M answers short factual questions in English once it is told
# to; with only its built-in system prompt it often drifts into French.
SYSTEM = "Answer in one short English sentence."

# Small sizes keep the suite inside two cores; eight sequences show batching and isolation.
ENGINE_SETTINGS: dict[str, Any] = {
    "slots": 8,
    "n_ctx_per_session": 1024,
    "max_tokens_cap": 256,
    "dev_api_key": TEST_KEY,
    # One dev key stands in for the many clients of a real appliance; the fair-share tests
    # (tests/integration/test_shares.py) run on the defaults, and so do the rate limits'
    # (tests/integration/test_rate_limits.py), which set their own.
    "client_max_requests": 128,
    "client_request_burst": 100_000,
}


_STATE_DIRS: list[Path] = []


def state_dir() -> Path:
    """A fresh appliance state directory, short enough for a unix socket path inside it."""
    path = Path(tempfile.mkdtemp(prefix="keep-", dir="/tmp"))
    _STATE_DIRS.append(path)
    return path


def state_settings(path: Path | None = None) -> dict[str, Any]:
    path = path or state_dir()
    return {"state_dir": path, "admin_socket": path / "admin.sock"}


@pytest.fixture(scope="session", autouse=True)
def _remove_state_dirs() -> Iterator[None]:
    yield
    for path in _STATE_DIRS:
        shutil.rmtree(path, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    controlenv.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    controlenv.configure(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    controlenv.unconfigure()


def make_settings(**overrides: Any) -> Settings:
    if "state_dir" not in overrides:
        overrides = {**state_settings(), **overrides}
    return Settings(**{**ENGINE_SETTINGS, **overrides})


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    engine = load_engine(make_settings())
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def embedder() -> Iterator[Embedder]:
    embedder = load_embedder(make_settings())
    yield embedder
    embedder.close()


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(engine: Engine, embedder: Embedder) -> Iterator[AppFactory]:
    """A TestClient on a fresh app over the shared engine; settings may be overridden."""
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        settings = make_settings(**overrides)
        client = TestClient(
            create_app(settings, engine=engine, embedder=embedder),
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            raise_server_exceptions=False,
        )
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)
    assert engine.free_sequences == engine.model.n_seq_max, "a test leaked a KV sequence"


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    key: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def admin_ready(path: Path) -> bool:
    """The host's readiness probe: the admin socket's /admin/readyz, which needs no API key
    (the API's /readyz does). A plain socket: httpx leaks one whose connect fails."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
            sock.sendall(b"GET /admin/readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


def start_server(
    tmp: Path, port: int, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> LiveServer:
    log_path = tmp / f"keep-{port}.log"
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEEP_")},
        **({} if "--dev-key" in args else {"KEEP_DEV_API_KEY": TEST_KEY}),
        "KEEP_MAX_SESSIONS": "4",
        **{f"KEEP_{k.upper()}": str(v) for k, v in state_settings().items()},
        "KEEP_N_CTX_PER_SESSION": "1024",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [KEEP, "serve", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", TEST_KEY, process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keep serve exited early:\n{server.log()}")
        if admin_ready(Path(environ["KEEP_ADMIN_SOCKET"])):
            return server
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"keep serve did not become ready:\n{server.log()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def keep_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("live"), free_port())
    yield server
    stop_server(server)


def never_stop(engine: Engine) -> dict[str, float]:
    """A logit_bias that bans every end-of-generation token, so a request runs to max_tokens."""
    eog = [t for t in range(engine.model.n_vocab) if engine.model.is_eog(t)]
    return {str(t): -100.0 for t in eog}


def chat_body(content: str = "What is the capital of France?", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 24,
        **extra,
    }


def ask(base: str, key: str) -> httpx.Response:
    """A two-token chat request to a running server as the holder of `key`."""
    return httpx.post(
        base + "/v1/chat/completions",
        json=chat_body(max_tokens=2),
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


ServerFactory = Callable[..., str]


@pytest.fixture
def serve_inproc(engine: Engine, embedder: Embedder) -> Iterator[ServerFactory]:
    """A real uvicorn server in a thread, over the shared engine: real sockets and real
    disconnects, with the engine still in reach of the test."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def factory(**overrides: Any) -> str:
        port = free_port()
        app = create_app(make_settings(port=port, **overrides), engine=engine, embedder=embedder)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield factory
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)
    assert engine.free_sequences == engine.model.n_seq_max, "a test leaked a KV sequence"
