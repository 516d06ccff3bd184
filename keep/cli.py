"""The `keep` command. Each subcommand imports its plane only when it runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keep.settings import Settings

EXIT_CONFIG = 2


def _fail(message: str) -> int:
    print(f"keep: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _banner(settings: Settings, dev_key: str | None) -> None:
    base = f"http://{settings.host}:{settings.port}"
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


def serve(args: argparse.Namespace) -> int:
    from keep.settings import SettingsError, load_settings

    overrides = {
        k: v for k, v in (("host", args.host), ("port", args.port), ("model", args.model)) if v
    }
    dev_key: str | None = None
    try:
        settings = load_settings(**overrides)
        if args.dev_key and settings.dev_api_key is None:
            from appliance.auth import new_key

            dev_key = new_key()
            settings = load_settings(**overrides, dev_api_key=dev_key)
    except SettingsError as exc:
        return _fail(str(exc))
    if not settings.api_key_hashes and settings.dev_api_key is None:
        return _fail(
            "KEEP_API_KEY_HASHES: no API key is configured "
            "(set it, set KEEP_DEV_API_KEY, or pass --dev-key)"
        )
    _configure_logging(settings)

    import uvicorn

    from appliance.app import create_app, load_engine
    from inference.errors import InferenceError

    try:
        engine = load_engine(settings)
    except InferenceError as exc:
        return _fail(str(exc))
    app = create_app(settings, engine=engine, on_ready=lambda: _banner(settings, dev_key))
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            access_log=False,
            server_header=False,
            log_config=None,
            timeout_graceful_shutdown=int(settings.request_deadline_s),
        )
    finally:
        engine.close()
    return 0


def control(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "control.settings")
    from django.core.management import execute_from_command_line

    from keep.settings import SettingsError

    try:
        execute_from_command_line(["keep control", *args.args])
    except SettingsError as exc:
        return _fail(str(exc))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keep", description="Keep, the LLM appliance.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    p.add_argument("--host", help="listen address (default: KEEP_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: KEEP_PORT, 8080)")
    p.add_argument("--model", help="pinned model name (default: KEEP_MODEL)")
    p.add_argument(
        "--dev-key",
        action="store_true",
        help="generate a development API key and print it once",
    )
    p.set_defaults(func=serve)

    c = sub.add_parser("control", help="run a control (Django) management command", add_help=False)
    c.add_argument("args", nargs=argparse.REMAINDER)
    c.set_defaults(func=control)

    from keep.transparency import cli as verify_cli

    v = sub.add_parser(
        "verify",
        help="check receipts offline: signature, inclusion, and consistency with an "
        "earlier checkpoint",
        description="Exit codes: 0 valid, 1 invalid, 3 unverifiable, 2 usage error.",
    )
    verify_cli.add_arguments(v)
    v.set_defaults(func=verify_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
