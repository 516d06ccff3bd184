"""`keep verify`: check receipts offline. Needs only the standard library and `cryptography`.

Exit codes: 0 valid, 1 invalid (with the reason), 3 unverifiable (for example an unknown key),
2 a usage error. For a JSON Lines file every line must be valid; the worst outcome wins.
Every checkpoint in one run (the bundles', --previous's, the saved one) is cross-checked: one
root per tree size, and growth proved where --consistency covers two sizes. Malformed input
of any kind is "invalid" with a one-line reason, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from transparency.note import Checkpoint, NoteError, UnknownKey, Verifier, open_checkpoint
from transparency.verify import (
    Consistency,
    Invalid,
    Unverifiable,
    Witness,
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
    """The whole input as text, or Invalid: more than MAX_INPUT_BYTES is refused, never cut
    to size, and bytes that are not UTF-8 are malformed input."""
    if path == "-":
        raw: bytes | str = (
            stdin.buffer.read(MAX_INPUT_BYTES + 1)
            if hasattr(stdin, "buffer")
            else stdin.read(MAX_INPUT_BYTES + 1)
        )
    else:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_INPUT_BYTES + 1)
    if len(raw) > MAX_INPUT_BYTES:
        raise Invalid("the input is larger than the limit")
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("the input is not UTF-8 text") from None


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
    previous_note = ""
    consistency: Consistency | None = None
    try:
        if args.previous:
            previous_note = _read(args.previous, stdin)
            previous = open_checkpoint(previous_note, verifier)
        if args.consistency:
            consistency = Consistency.parse(parse_json(_read(args.consistency, stdin)))
        text = _read(args.file, stdin)
    except UnknownKey:
        print("unverifiable: the earlier checkpoint is not signed by this key", file=out)
        return UNVERIFIABLE
    except (NoteError, Invalid) as exc:
        print(f"invalid: {exc}", file=out)
        return INVALID
    except OSError as exc:
        print(f"keep verify: cannot read input ({type(exc).__name__})", file=out)
        return USAGE
    witness = Witness(consistency)
    if previous is not None:
        witness.add(previous, previous_note)
    outcome = _check_all(text, verifier, previous, consistency, witness, out)
    if outcome == VALID and args.save_checkpoint and witness.largest is not None:
        outcome = _save(Path(args.save_checkpoint), witness, verifier, out)
    return outcome


def _save(path: Path, witness: Witness, verifier: Verifier, out: TextIO) -> int:
    """Keep the largest checkpoint seen, cross-checked with the one already saved at `path`;
    a larger saved one stays, and a file that is not this log's checkpoint is left alone."""
    try:
        kept: str | None = _read(str(path), io.StringIO())
    except FileNotFoundError:
        kept = None
    except (OSError, Invalid) as exc:
        print(f"keep verify: --save-checkpoint: cannot read the file there ({exc})", file=out)
        return USAGE
    saved: Checkpoint | None = None
    if kept is not None:
        try:
            saved = open_checkpoint(kept, verifier)
        except NoteError:
            print(
                "keep verify: --save-checkpoint: the file there is not a checkpoint of this "
                "log; left as it is",
                file=out,
            )
            return USAGE
        try:
            witness.add(saved, kept)
        except Invalid as exc:
            print(f"invalid: the saved checkpoint: {exc}", file=out)
            return INVALID
    largest = witness.largest
    assert largest is not None
    if saved is None or saved.size < largest.size:
        _replace(path, witness.notes[largest.size])
    return VALID


def _replace(path: Path, text: str) -> None:
    """Write `text` at `path` atomically: a crash leaves the old checkpoint or the new one."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _documents(text: str) -> list[Any]:
    """One bundle (pretty-printed or not), or JSON Lines of bundles. A line that is not JSON
    stays in the list as its Invalid, reported as that line's problem."""
    try:
        return [parse_json(text)]
    except Invalid:
        pass
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        raise Invalid("the input is empty")
    documents: list[Any] = []
    for line in lines:
        try:
            documents.append(parse_json(line))
        except Invalid as exc:
            documents.append(exc)
    return documents


def _check_all(
    text: str,
    verifier: Verifier,
    previous: Checkpoint | None,
    consistency: Consistency | None,
    witness: Witness,
    out: TextIO,
) -> int:
    try:
        bundles = _documents(text)
    except Invalid as exc:
        print(f"invalid: {exc}", file=out)
        return INVALID
    worst = VALID
    for number, bundle in enumerate(bundles, start=1):
        where = f"receipt {number}" if len(bundles) > 1 else "receipt"
        try:
            if isinstance(bundle, Invalid):
                raise bundle
            checkpoint = verify_bundle(bundle, verifier, previous=previous, consistency=consistency)
            witness.add(checkpoint, bundle["checkpoint"])
        except Invalid as exc:
            print(f"{where}: invalid: {exc}", file=out)
            worst = INVALID
            continue
        except Unverifiable as exc:
            print(f"{where}: unverifiable: {exc}", file=out)
            worst = worst if worst == INVALID else UNVERIFIABLE
            continue
        receipt = bundle["receipt"]
        print(
            f"{where}: valid: session {receipt['session_id']}, log entry {receipt['seq']}",
            file=out,
        )
    summary = {VALID: "valid", INVALID: "invalid", UNVERIFIABLE: "unverifiable"}[worst]
    if len(bundles) > 1:
        print(f"{len(bundles)} receipts: {summary}", file=out)
    return worst


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
