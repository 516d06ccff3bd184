"""The `keep` command: the composition root. It parses the command line, builds the settings
once and hands each plane its own view; every subcommand's body lives in its plane, imported
only when that subcommand runs, so `keep verify` never loads the server, nor pydantic."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keep.settings import Settings

PROVISION_ACTIONS = ("up", "sync", "check", "render")


def _settings(**overrides: object) -> Settings | None:
    # Imported here, not above: `keep verify` must run where only `cryptography` is installed.
    from keep.settings import SettingsError, load_settings

    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        print(f"keep: {exc}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    overrides = {
        k: v for k, v in (("host", args.host), ("port", args.port), ("model", args.model)) if v
    }
    settings = _settings(**overrides)
    if settings is None:
        return 2
    from appliance.serve import serve as run

    return run(settings.appliance, dev_key=args.dev_key)


def models(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    from appliance.serve import check_models

    return check_models(settings.appliance)


def provision(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    from provisioning.cli import run

    return run(args.action, settings.perimeter, out=args.out)


def control(args: argparse.Namespace) -> int:
    from control.manage import main as manage

    return manage(["keep control", *args.args])


def doctor(args: argparse.Namespace) -> int:
    from control.manage import main as manage

    return manage(["keep control", "keep_doctor"])


def verify(args: argparse.Namespace) -> int:
    from transparency.cli import run

    return run(args)


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
        choices=PROVISION_ACTIONS,
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

    from transparency.cli import add_arguments

    v = sub.add_parser(
        "verify",
        help="check receipts offline: signature, inclusion, and consistency with an "
        "earlier checkpoint",
        description="Exit codes: 0 valid, 1 invalid, 3 unverifiable, 2 usage error.",
    )
    add_arguments(v)
    v.set_defaults(func=verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
