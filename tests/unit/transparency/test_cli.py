"""`keep verify` against hostile input: conflicting checkpoints, a checkpoint file that must
not shrink, and malformed input of every kind, each answered with an exit code and one line
per problem, never a traceback."""

from __future__ import annotations

import io
import json
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.receipt_log import Log, make_log
from transparency import cli
from transparency.note import Checkpoint

LOG = make_log(9)
VERIFIER = LOG.verifier


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def args_for(path: Path, **extra: Any) -> Namespace:
    args = Namespace(
        file=str(path), key=VERIFIER.encode(), previous=None, consistency=None, save_checkpoint=None
    )
    for name, value in extra.items():
        setattr(args, name, value)
    return args


def run_bytes(tmp_path: Path, content: bytes, **extra: Any) -> tuple[int, list[str]]:
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    out = io.StringIO()
    code = cli.run(args_for(path, **extra), out=out)
    return code, out.getvalue().splitlines()


def run_text(tmp_path: Path, content: str, **extra: Any) -> tuple[int, list[str]]:
    return run_bytes(tmp_path, content.encode(), **extra)


def forked_log(size: int) -> Log:
    """The same key signing a second history: entry 2 differs, so every tree from 3 on does."""
    fork = Log(key=LOG.key)
    for seq in range(size):
        fork.add(requests=9) if seq == 2 else fork.add()
    return fork


# Conflicting checkpoints in one input.


def test_two_checkpoints_of_one_size_with_different_roots_are_a_fork(tmp_path: Path) -> None:
    fork = forked_log(9)
    export = dumps(LOG.bundle(0)) + "\n" + dumps(fork.bundle(1)) + "\n"
    code, lines = run_text(tmp_path, export)
    assert code == cli.INVALID, lines
    assert lines[1].startswith("receipt 2: invalid:")
    assert "forked" in lines[1]
    assert lines[-1] == "2 receipts: invalid"


def test_a_larger_checkpoint_must_extend_a_smaller_one_when_a_proof_is_given(
    tmp_path: Path,
) -> None:
    fork = forked_log(9)
    proof = tmp_path / "proof.json"
    proof.write_text(dumps(LOG.consistency(5, 9).encode()))
    honest = dumps(LOG.bundle(1, size=5)) + "\n" + dumps(LOG.bundle(1)) + "\n"
    code, lines = run_text(tmp_path, honest, consistency=str(proof))
    assert code == cli.VALID, lines
    forked = dumps(LOG.bundle(1, size=5)) + "\n" + dumps(fork.bundle(1)) + "\n"
    code, lines = run_text(tmp_path, forked, consistency=str(proof))
    assert code == cli.INVALID, lines
    assert "receipt 2: invalid: consistency" in lines[1]


# --save-checkpoint keeps the largest consistent checkpoint, and never shrinks a file.


def saved_size(path: Path) -> int:
    return int(path.read_text().split("\n")[1])


def test_the_saved_checkpoint_is_the_largest_one_seen(tmp_path: Path) -> None:
    saved = tmp_path / "cp"
    export = dumps(LOG.bundle(1)) + "\n" + dumps(LOG.bundle(1, size=4)) + "\n"
    code, lines = run_text(tmp_path, export, save_checkpoint=str(saved))
    assert code == cli.VALID, lines
    assert saved_size(saved) == 9


def test_a_larger_saved_checkpoint_is_kept(tmp_path: Path) -> None:
    saved = tmp_path / "cp"
    saved.write_text(LOG.checkpoint(9))
    code, lines = run_text(tmp_path, dumps(LOG.bundle(1, size=4)), save_checkpoint=str(saved))
    assert code == cli.VALID, lines
    assert saved.read_text() == LOG.checkpoint(9)
    code, lines = run_text(tmp_path, dumps(LOG.bundle(3)), save_checkpoint=str(saved))
    assert code == cli.VALID, lines
    assert saved.read_text() == LOG.checkpoint(9)


def test_a_saved_checkpoint_that_conflicts_is_a_fork_and_is_kept(tmp_path: Path) -> None:
    saved = tmp_path / "cp"
    saved.write_text(forked_log(9).checkpoint())
    code, lines = run_text(tmp_path, dumps(LOG.bundle(1)), save_checkpoint=str(saved))
    assert code == cli.INVALID, lines
    assert "forked" in lines[-1]
    assert saved.read_text() == forked_log(9).checkpoint()


def test_a_file_that_is_not_a_checkpoint_is_not_overwritten(tmp_path: Path) -> None:
    saved = tmp_path / "cp"
    saved.write_text("something else\n")
    code, lines = run_text(tmp_path, dumps(LOG.bundle(1)), save_checkpoint=str(saved))
    assert code == cli.USAGE, lines
    assert saved.read_text() == "something else\n"


# Malformed input: exit 1 and one line, never a traceback.


def test_an_integer_beyond_two_to_the_53_is_invalid(tmp_path: Path) -> None:
    bundle = LOG.bundle(2)
    bundle["receipt"]["prompt_tokens"] = 2**53 + 1
    code, lines = run_text(tmp_path, dumps(bundle))
    assert code == cli.INVALID, lines
    assert len(lines) == 1
    assert lines[0].startswith("receipt: invalid:")


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not utf-8",
        b"[" * 200_000,
        b'{"receipt": ' + b"9" * 5000 + b"}",
        dumps(LOG.bundle(2))[:-40].encode(),
        b'5\n[]\n"text"\n',
        b"\x00",
    ],
    ids=["bad utf-8", "deep nesting", "huge integer", "truncated", "not objects", "nul"],
)
def test_malformed_input_is_invalid_in_one_line_per_problem(tmp_path: Path, content: bytes) -> None:
    code, lines = run_bytes(tmp_path, content)
    assert code == cli.INVALID, lines
    problems = [line for line in lines if "invalid" in line]
    assert problems
    assert all("Traceback" not in line for line in lines)
    assert len(lines) <= content.count(b"\n") + 2


def test_a_lone_surrogate_in_a_receipt_is_invalid(tmp_path: Path) -> None:
    text = dumps(LOG.bundle(2)).replace('"peer-1"', '"\\ud800"')
    code, lines = run_text(tmp_path, text)
    assert code == cli.INVALID, lines


def test_an_oversized_input_is_refused_not_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = dumps(LOG.bundle(1)) + "\n"
    monkeypatch.setattr(cli, "MAX_INPUT_BYTES", len(good) + 10)
    code, lines = run_text(tmp_path, good + dumps(LOG.bundle(2)) + "\n")
    assert code == cli.INVALID, lines
    assert lines == ["invalid: the input is larger than the limit"]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(2**53 - 2, 2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
GOOD = LOG.bundle(4)


@st.composite
def near_bundles(draw: st.DrawFn) -> Any:
    """A valid bundle with one field, or one receipt field, replaced by any JSON value."""
    bundle = json.loads(dumps(GOOD))
    if draw(st.booleans()):
        bundle[draw(st.sampled_from(sorted(bundle)))] = draw(JSON)
    else:
        bundle["receipt"][draw(st.sampled_from(sorted(bundle["receipt"])))] = draw(JSON)
    return bundle


def assert_answered(code: int, lines: list[str], documents: int) -> None:
    assert code in {cli.INVALID, cli.USAGE, cli.UNVERIFIABLE}, lines
    assert 1 <= len(lines) <= documents + 1, lines
    assert all(line and "Traceback" not in line for line in lines)


FUZZ = settings(max_examples=150, suppress_health_check=list(HealthCheck), deadline=None)


@FUZZ
@given(st.lists(JSON | near_bundles(), min_size=1, max_size=4))
def test_any_json_lines_are_answered_not_raised(tmp_path: Path, values: list[Any]) -> None:
    text = "\n".join(json.dumps(v) for v in values) + "\n"
    if all(v == GOOD for v in values):
        return
    code, lines = run_text(tmp_path, text)
    assert_answered(code, lines, len(values))


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_are_answered_not_raised(tmp_path: Path, raw: bytes) -> None:
    code, lines = run_bytes(tmp_path, raw)
    assert_answered(code, lines, raw.count(b"\n") + 1)


@FUZZ
@given(JSON)
def test_any_previous_or_consistency_file_is_answered(tmp_path: Path, value: Any) -> None:
    junk = tmp_path / "junk"
    junk.write_text(json.dumps(value))
    for option in ("previous", "consistency"):
        code, lines = run_text(tmp_path, dumps(GOOD), **{option: str(junk)})
        assert_answered(code, lines, 1)


def test_checkpoints_are_signed_by_this_log() -> None:
    """The fork helper signs with the same key, so a fork is a conflict, not a foreign log."""
    fork = forked_log(9)
    assert fork.name == LOG.name
    assert fork.checkpoint() != LOG.checkpoint()
    assert Checkpoint(LOG.name, 9, fork.tree.root()).sign(LOG.name, LOG.key) == fork.checkpoint()


def test_a_lone_surrogate_in_the_checkpoint_is_invalid(tmp_path: Path) -> None:
    bundle = LOG.bundle(2)
    bundle["checkpoint"] = bundle["checkpoint"].replace("\n\n", "\n\ud800\n")
    code, lines = run_text(tmp_path, json.dumps(bundle))
    assert code == cli.INVALID, lines
