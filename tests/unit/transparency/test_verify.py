"""The tamper corpus: every corruption of a receipt bundle is refused, none is accepted."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.receipt_log import Log, make_log
from transparency import cli
from transparency import receipt as receipts
from transparency.note import Checkpoint, NoteError, Verifier, open_checkpoint
from transparency.verify import Invalid, Unverifiable, parse_json, verify_bundle

LOG = make_log(11)
VERIFIER = LOG.verifier


def dumps(bundle: dict[str, Any]) -> str:
    return json.dumps(bundle, separators=(",", ":"))


def check_text(text: str, **kwargs: Any) -> None:
    verify_bundle(parse_json(text), VERIFIER, **kwargs)


@pytest.mark.parametrize("index", [0, 5, 10])
def test_an_untouched_bundle_is_valid(index: int) -> None:
    checkpoint = verify_bundle(LOG.bundle(index), VERIFIER)
    assert (checkpoint.size, checkpoint.root) == (11, LOG.tree.root())


GOOD = dumps(LOG.bundle(6))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.integers(0, len(GOOD.encode()) * 8 - 1))
def test_no_single_bit_flip_is_accepted(bit: int) -> None:
    raw = bytearray(GOOD.encode())
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return  # not even text: nothing to accept
    with pytest.raises((Invalid, Unverifiable)):
        check_text(text)


def test_every_bit_of_the_receipt_signature_and_root_matters() -> None:
    """Exhaustive over the parts a forger aims at: every bit of every receipt field value."""
    bundle = LOG.bundle(3)
    for field, value in bundle["receipt"].items():
        encoded = json.dumps(value).encode()
        for bit in range(len(encoded) * 8):
            raw = bytearray(encoded)
            raw[bit // 8] ^= 1 << (bit % 8)
            try:
                tampered = json.loads(raw.decode())
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if tampered == value:
                continue
            forged = LOG.bundle(3)
            forged["receipt"][field] = tampered
            with pytest.raises((Invalid, Unverifiable)):
                verify_bundle(forged, VERIFIER)


def tampered(position: int, **changes: Any) -> dict[str, Any]:
    bundle = LOG.bundle(position)
    bundle.update(changes)
    return bundle


PROOF = LOG.bundle(4)["inclusion_proof"]
FIXTURES: dict[str, dict[str, Any]] = {
    "truncated proof": tampered(4, inclusion_proof=PROOF[:-1]),
    "extended proof": tampered(4, inclusion_proof=[*PROOF, PROOF[0]]),
    "empty proof": tampered(4, inclusion_proof=[]),
    "reordered proof": tampered(4, inclusion_proof=PROOF[::-1]),
    "wrong index": tampered(4, index=5),
    "proof for another leaf": tampered(4, inclusion_proof=LOG.bundle(5)["inclusion_proof"]),
    "checkpoint of another size": tampered(4, checkpoint=LOG.checkpoint(10)),
    "unsigned checkpoint": tampered(4, checkpoint=Checkpoint(LOG.name, 11, LOG.tree.root()).body()),
    "signature of another receipt": tampered(4, signature=LOG.bundle(5)["signature"]),
    "missing field": {k: v for k, v in LOG.bundle(4).items() if k != "index"},
    "extra field": tampered(4, note="x"),
    "not an object": [],  # type: ignore[dict-item]
}


def wrong_tree_size() -> dict[str, Any]:
    """The size line of the signed checkpoint edited: the signature no longer covers it."""
    bundle = LOG.bundle(4)
    origin, size, rest = bundle["checkpoint"].split("\n", 2)
    bundle["checkpoint"] = f"{origin}\n{int(size) + 1}\n{rest}"
    return bundle


FIXTURES["wrong tree size"] = wrong_tree_size()


def swapped(field: str) -> dict[str, Any]:
    """A field copied from another valid receipt in the same log."""
    bundle = LOG.bundle(2)
    bundle["receipt"][field] = LOG.bundle(7)["receipt"][field]
    return bundle


for _field in ("session_id", "prompt_tokens", "completion_tokens", "requests", "seq"):
    FIXTURES[f"{_field} swapped between receipts"] = swapped(_field)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_tamper_fixtures_are_invalid(name: str) -> None:
    with pytest.raises(Invalid):
        verify_bundle(FIXTURES[name], VERIFIER)


def test_a_receipt_from_another_key_is_unverifiable_not_invalid() -> None:
    other = make_log(3)
    with pytest.raises(Unverifiable):
        verify_bundle(other.bundle(1), VERIFIER)


def test_reordered_or_deleted_journal_entries_break_inclusion() -> None:
    """Rebuild the log with two entries swapped, and with one deleted: a receipt's proof from
    the altered log does not verify against a checkpoint of the honest one."""
    honest = LOG.checkpoint()
    for entries in (
        [LOG.entries[i] for i in (0, 1, 3, 2, *range(4, 11))],
        [e for i, e in enumerate(LOG.entries) if i != 2],
    ):
        altered = Log(key=LOG.key)
        for body, signature in entries:
            altered.entries.append((body, signature))
            altered.tree.append(receipts.leaf(body))
        for index in range(len(entries)):
            bundle = altered.bundle(index)
            bundle["checkpoint"] = honest
            if (
                bundle["receipt"]["seq"] == index
                and bundle["inclusion_proof"] == LOG.bundle(index)["inclusion_proof"]
            ):
                continue  # an entry the alteration did not touch still proves honestly
            with pytest.raises(Invalid):
                verify_bundle(bundle, VERIFIER)


def test_a_rolled_back_or_forked_log_is_caught_by_the_earlier_checkpoint() -> None:
    later = open_checkpoint(LOG.checkpoint(11), VERIFIER)
    with pytest.raises(Invalid, match="rolled back"):
        verify_bundle(LOG.bundle(2, size=8), VERIFIER, previous=later)
    fork = Log(key=LOG.key)
    for body, signature in LOG.entries[:10]:
        fork.entries.append((body, signature))
        fork.tree.append(json.dumps(body).encode())  # different leaf bytes
    fork_checkpoint = Checkpoint(LOG.name, 11, b"\x07" * 32).sign(LOG.name, LOG.key)
    bundle = LOG.bundle(2)
    bundle["checkpoint"] = fork_checkpoint
    with pytest.raises(Invalid):
        verify_bundle(bundle, VERIFIER)
    earlier = open_checkpoint(LOG.checkpoint(5), VERIFIER)
    verify_bundle(LOG.bundle(2), VERIFIER, previous=earlier, consistency=LOG.consistency(5))
    bad = LOG.consistency(5)
    forged = type(bad)(bad.old_size, bad.size, (b"\x00" * 32, *bad.proof[1:]))
    with pytest.raises(Invalid, match="consistency"):
        verify_bundle(LOG.bundle(2), VERIFIER, previous=earlier, consistency=forged)
    with pytest.raises(Unverifiable):
        verify_bundle(LOG.bundle(2), VERIFIER, previous=earlier)


def test_verifier_keys_round_trip_and_reject_tampering() -> None:
    encoded = VERIFIER.encode()
    assert Verifier.parse(encoded) == VERIFIER
    name, key_id, blob = encoded.split("+", 2)
    for bad in (f"{name}+{'0' * 8}+{blob}", f"{name}x+{key_id}+{blob}", f"{name}+{key_id}"):
        with pytest.raises(NoteError):
            Verifier.parse(bad)


# `keep verify`: exit codes and messages.


def run_cli(tmp_path: Path, content: str, **extra: str) -> tuple[int, str]:
    path = tmp_path / "in.json"
    path.write_text(content)
    out = io.StringIO()
    args = Namespace(
        file=str(path), key=VERIFIER.encode(), previous=None, consistency=None, save_checkpoint=None
    )
    for name, value in extra.items():
        setattr(args, name, value)
    return cli.run(args, out=out), out.getvalue()


def test_cli_exit_codes(tmp_path: Path) -> None:
    assert run_cli(tmp_path, dumps(LOG.bundle(1)))[0] == cli.VALID
    export = "\n".join(dumps(LOG.bundle(i)) for i in range(11)) + "\n"
    code, out = run_cli(tmp_path, export)
    assert code == cli.VALID, out
    assert "11 receipts: valid" in out
    lines = export.splitlines()
    lines[3] = dumps(FIXTURES["wrong index"])
    code, out = run_cli(tmp_path, "\n".join(lines))
    assert code == cli.INVALID, out
    assert "receipt 4: invalid" in out
    code, out = run_cli(tmp_path, dumps(make_log(2).bundle(0)))
    assert code == cli.UNVERIFIABLE, out
    assert "unverifiable" in out
    assert run_cli(tmp_path, "{not json")[0] == cli.INVALID
    assert run_cli(tmp_path, "")[0] == cli.INVALID


def test_cli_checks_growth_against_a_saved_checkpoint(tmp_path: Path) -> None:
    saved = tmp_path / "checkpoint"
    first = dumps(LOG.bundle(1, size=5))
    assert run_cli(tmp_path, first, save_checkpoint=str(saved))[0] == cli.VALID
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(LOG.consistency(5).encode()))
    code, _ = run_cli(tmp_path, dumps(LOG.bundle(1)), previous=str(saved), consistency=str(proof))
    assert code == cli.VALID
    rolled = tmp_path / "later"
    rolled.write_text(LOG.checkpoint(11))
    code, out = run_cli(tmp_path, dumps(LOG.bundle(1, size=5)), previous=str(rolled))
    assert code == cli.INVALID, out
    assert "rolled back" in out


def test_keep_verify_needs_nothing_but_cryptography(tmp_path: Path) -> None:
    """Run `keep verify` with every import outside the standard library and `cryptography`
    (and Keep's own verifier) refused, as on a client machine with only those installed."""
    bundle = tmp_path / "bundle.json"
    bundle.write_text(dumps(LOG.bundle(9)))
    guard = (
        "import sys, importlib.abc\n"
        "allowed = ('keep', 'transparency', 'cryptography', '_cffi_backend', 'cffi')\n"
        "class Guard(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        top = name.split('.')[0]\n"
        "        if top in sys.stdlib_module_names or top in allowed:\n"
        "            return None\n"
        "        raise ImportError('refused: ' + name)\n"
        "sys.meta_path.insert(0, Guard())\n"
        "from keep.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", guard, "verify", "--key", VERIFIER.encode(), str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid: session" in result.stdout
