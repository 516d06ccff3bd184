"""`keep serve` and `keep models`: the appliance process, from its settings to uvicorn.

Invariant: while `keep serve` runs, file descriptors 1 and 2 are /dev/null. C code in the
process (llama.cpp's grammar parser, GGML_ABORT's backtrace) writes to them directly, past
llama_log_set, and what it writes can quote a request: a grammar parse error prints the whole
grammar, with a schema's property names and enum values. Keep's own content-free output (its
logging, Python's diagnostics, the banner) goes to duplicates of the original descriptors, so
the journal still gets it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from pydantic import SecretStr

from appliance.auth import new_key
from keep.settings import ApplianceSettings


def _fail(message: str) -> int:
    print(f"keep: {message}", file=sys.stderr)
    return 2


def _isolate_output() -> None:
    """Point fds 1 and 2 at /dev/null; give sys.stdout and sys.stderr private duplicates of
    the originals."""
    sys.stdout.flush()
    sys.stderr.flush()
    out: TextIO = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    err: TextIO = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
    finally:
        os.close(null)
    sys.stdout, sys.stderr = out, err


def _configure_logging(settings: ApplianceSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from appliance.journald import configure_audit

    configure_audit()


def _banner(settings: ApplianceSettings, dev_key: str | None) -> None:
    base = (
        f"http://{settings.host}:{settings.port}"
        if settings.listen_socket is None
        else f"unix:{settings.listen_socket}"
    )
    lines = [f"Keep is ready on {base}, serving {settings.model}."]
    if dev_key is not None:
        lines += [
            "",
            "Dev API key (shown once; held only in this process's memory):",
            f"  export KEEP_API_KEY={dev_key}",
            "",
            "Try it:",
            f"  curl -s {base}/v1/chat/completions \\",
            f'    -H "Authorization: Bearer {dev_key}" -H "Content-Type: application/json" \\',
            f'    -d \'{{"model": "{settings.model}", "temperature": 0, "messages": ['
            '{"role": "system", "content": "Answer in one short English sentence."}, '
            '{"role": "user", "content": "What is the capital of France?"}]}\'',
        ]
    print("\n".join(lines), flush=True)


def serve(settings: ApplianceSettings, *, dev_key: bool = False) -> int:
    """Serve the API until stopped; `dev_key` makes a key held only in this process."""
    shown: str | None = None
    if dev_key and settings.listen_socket is not None:
        return _fail(
            "--dev-key: static keys are refused behind NGINX (KEEP_LISTEN_SOCKET is set); "
            "keys come from control's policy, bound to a peer"
        )
    if dev_key and settings.dev_api_key is None:
        shown = new_key()
        settings = settings.model_copy(update={"dev_api_key": SecretStr(shown)})
    # Behind NGINX (on the unix socket), keys come from control's policy.
    if not settings.api_key_hashes and settings.dev_api_key is None and not settings.listen_socket:
        return _fail(
            "KEEP_API_KEY_HASHES: no API key is configured "
            "(set it, set KEEP_DEV_API_KEY, or pass --dev-key)"
        )
    _isolate_output()
    _configure_logging(settings)

    import uvicorn

    from appliance.app import create_app, load_engine
    from inference.errors import InferenceError

    try:
        engine = load_engine(settings)
    except InferenceError as exc:
        return _fail(str(exc))
    app = create_app(settings, engine=engine, on_ready=lambda: _banner(settings, shown))
    if settings.listen_socket is not None:
        # Traversable only by its owner and group (NGINX's): uvicorn makes the socket 0666.
        settings.listen_socket.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    try:
        listen: dict[str, object] = (
            {"uds": str(settings.listen_socket)}
            if settings.listen_socket is not None
            else {"host": settings.host, "port": settings.port}
        )
        uvicorn.run(
            app,
            **listen,  # type: ignore[arg-type]
            access_log=False,
            server_header=False,
            log_config=None,
            timeout_graceful_shutdown=int(settings.request_deadline_s),
        )
    finally:
        engine.close()
    return 0


def check_models(settings: ApplianceSettings) -> int:
    """Check every pinned model (and the embedder) against its sha256, as start-up does."""
    from inference.errors import InferenceError
    from inference.registry import verify
    from rag.embedder import verify_dir
    from rag.errors import EmbedderError

    try:
        for pin in settings.models:
            verify(pin.name, pin.path, pin.sha256)
            print(f"{pin.name}: sha256 {pin.sha256} ok")
    except InferenceError as exc:
        return _fail(str(exc))
    embedder = settings.embedder
    try:
        verify_dir(embedder.name, embedder.path, embedder.sha256)
    except (OSError, EmbedderError) as exc:
        return _fail(str(exc))
    print(f"{embedder.name}: tree sha256 {embedder.sha256} ok")
    return 0
