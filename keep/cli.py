"""The `keep` command. Each subcommand imports its plane only when it runs."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
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
    # Behind NGINX (on the unix socket), keys come from control's policy.
    if not settings.api_key_hashes and settings.dev_api_key is None and not settings.listen_socket:
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


def provision(args: argparse.Namespace) -> int:
    """Host provisioning: run as root on the appliance host (ansible and `make demo` call
    it, so both produce the same configs)."""
    import json

    from keep.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(str(exc))
    if settings.wg_interface is None or settings.listen_socket is None:
        return _fail("KEEP_WG_INTERFACE and KEEP_LISTEN_SOCKET must be set to provision")
    from provisioning import nftables, nginx, perimeter, wireguard

    try:
        if args.action == "up":
            print(json.dumps(perimeter.up(settings, settings.listen_socket), indent=2))
        elif args.action == "sync":
            added, removed = perimeter.apply_handoff(settings)
            print(json.dumps({"set": added, "removed": removed}))
        elif args.action == "check":
            # Checked where they are rendered, in a scratch directory: a check changes nothing
            # on the host. NGINX's config names the installed certificate and allowlist.
            nftables.check(nftables.render(settings))
            with tempfile.TemporaryDirectory(prefix="keep-check-") as scratch:
                conf = Path(scratch) / nginx.CONF
                conf.write_text(nginx.render(settings, settings.listen_socket))
                nginx.check(conf)
            print("nft -c and nginx -t: both configs pass")
        else:
            perimeter.server_public_key(settings)  # the WireGuard key pair, for bundles
            out = args.out or settings.nginx_dir
            nginx.write(settings, settings.listen_socket, perimeter.ca_dir(settings), out)
            (out / "keep.nft").write_text(nftables.render(settings))
            print(f"rendered into {out}")
    except (
        OSError,
        RuntimeError,
        ValueError,
        nftables.FirewallError,
        wireguard.WireGuardError,
    ) as exc:
        return _fail(f"provision {args.action}: {exc}")
    return 0


def models(args: argparse.Namespace) -> int:
    """Check every pinned model (and the embedder) against its sha256, as start-up does."""
    from keep.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(str(exc))
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


def doctor(args: argparse.Namespace) -> int:
    return control(argparse.Namespace(args=["keep_doctor"]))


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

    pr = sub.add_parser("provision", help="provision this host's perimeter (as root)")
    pr.add_argument(
        "action",
        choices=("up", "sync", "check", "render"),
        help="up: WireGuard, nftables and NGINX's config; sync: apply the peers control "
        "handed off (KEEP_WG_PEER_HANDOFF); check: render both configs and run nft -c and "
        "nginx -t; render: write the configs only",
    )
    pr.add_argument(
        "--out",
        type=Path,
        help="render: write into this staging directory (the files still name their final "
        "places under KEEP_NGINX_DIR)",
    )
    pr.set_defaults(func=provision)

    m = sub.add_parser("models", help="check every pinned model against its sha256")
    m.set_defaults(func=models)

    d = sub.add_parser(
        "doctor", help="report drift between control's peers, WireGuard, NGINX and the policy"
    )
    d.set_defaults(func=doctor)

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
