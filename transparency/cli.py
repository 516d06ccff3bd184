"""`keep verify`: check receipts offline. Needs only the standard library and `cryptography`.

Exit codes: 0 valid, 1 invalid (with the reason), 3 unverifiable (for example an unknown key),
2 a usage error. For a JSON Lines file every line must be valid; the worst outcome wins.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from transparency.note import Checkpoint, NoteError, UnknownKey, Verifier, open_checkpoint
from transparency.verify import (
    Consistency,
    Invalid,
    Unverifiable,
    parse_json,
    verify_bundle,
)

VALID, INVALID, USAGE, UNVERIFIABLE = 0, 1, 2, 3
MAX_INPUT_BYTES = 256 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", help="a receipt bundle (JSON) or an export (JSON Lines); - reads stdin"
    )
    parser.add_argument(
        "--key",
        required=True,
        help="the appliance's verifier key (name+id+base64), or a file holding it",
    )
    parser.add_argument(
        "--previous", help="a checkpoint kept from an earlier verification (a file)"
    )
    parser.add_argument(
        "--consistency",
        help="the consistency proof from --previous's size to the bundle's (a JSON file, "
        "from GET /v1/receipts/consistency)",
    )
    parser.add_argument(
        "--save-checkpoint",
        help="write the checkpoint that proved the receipts here, for the next --previous",
    )


def _read(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read(MAX_INPUT_BYTES)
    with Path(path).open(encoding="utf-8") as handle:
        return handle.read(MAX_INPUT_BYTES)


def _verifier(text: str) -> Verifier:
    candidate = Path(text)
    if "+" not in text or candidate.is_file():
        text = candidate.read_text(encoding="ascii").strip()
    return Verifier.parse(text)


def run(args: argparse.Namespace, out: TextIO = sys.stdout, stdin: TextIO = sys.stdin) -> int:
    try:
        verifier = _verifier(args.key)
    except (OSError, UnicodeDecodeError, NoteError) as exc:
        print(f"unverifiable: the key cannot be read ({type(exc).__name__})", file=out)
        return UNVERIFIABLE
    previous: Checkpoint | None = None
    consistency: Consistency | None = None
    try:
        if args.previous:
            previous = open_checkpoint(_read(args.previous, stdin), verifier)
        if args.consistency:
            consistency = Consistency.parse(parse_json(_read(args.consistency, stdin)))
        text = _read(args.file, stdin)
    except UnknownKey:
        print("unverifiable: the earlier checkpoint is not signed by this key", file=out)
        return UNVERIFIABLE
    except (NoteError, Invalid) as exc:
        print(f"invalid: {exc}", file=out)
        return INVALID
    except (OSError, UnicodeDecodeError) as exc:
        print(f"keep verify: cannot read input ({type(exc).__name__})", file=out)
        return USAGE
    outcome, proved = _check_all(text, verifier, previous, consistency, out)
    if outcome == VALID and args.save_checkpoint and proved is not None:
        Path(args.save_checkpoint).write_text(proved, encoding="utf-8")
    return outcome


def _documents(text: str) -> list[Any]:
    """One bundle (pretty-printed or not), or JSON Lines of bundles."""
    try:
        return [json.loads(text)]
    except (json.JSONDecodeError, RecursionError):
        pass
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        raise Invalid("the input is empty")
    return [parse_json(line) for line in lines]


def _check_all(
    text: str,
    verifier: Verifier,
    previous: Checkpoint | None,
    consistency: Consistency | None,
    out: TextIO,
) -> tuple[int, str | None]:
    try:
        bundles = _documents(text)
    except Invalid as exc:
        print(f"invalid: {exc}", file=out)
        return INVALID, None
    worst = VALID
    proved: str | None = None
    for number, bundle in enumerate(bundles, start=1):
        where = f"receipt {number}" if len(bundles) > 1 else "receipt"
        try:
            verify_bundle(bundle, verifier, previous=previous, consistency=consistency)
        except Invalid as exc:
            print(f"{where}: invalid: {exc}", file=out)
            worst = INVALID
            continue
        except Unverifiable as exc:
            print(f"{where}: unverifiable: {exc}", file=out)
            worst = worst if worst == INVALID else UNVERIFIABLE
            continue
        proved = bundle["checkpoint"]
        receipt = bundle["receipt"]
        print(
            f"{where}: valid: session {receipt['session_id']}, log entry {receipt['seq']}",
            file=out,
        )
    summary = {VALID: "valid", INVALID: "invalid", UNVERIFIABLE: "unverifiable"}[worst]
    if len(bundles) > 1:
        print(f"{len(bundles)} receipts: {summary}", file=out)
    return worst, proved


def main(argv: list[str] | None = None) -> int:
    """The `keep-verify` command of the stand-alone verifier distribution."""
    parser = argparse.ArgumentParser(
        prog="keep-verify",
        description="Check Keep receipts offline: signature, inclusion, and consistency with "
        "an earlier checkpoint. Exit codes: 0 valid, 1 invalid, 3 unverifiable, 2 usage error.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
