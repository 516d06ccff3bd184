"""The receipt journal on its own: bounded memory, start-up from its signed checkpoint,
lookups read from disk, one snapshot per pull, and its own thread for appends."""

from __future__ import annotations

import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.journal import CHECKPOINT_NAME, JOURNAL_NAME, JournalError, ReceiptLog
from transparency.merkle import verify_consistency
from transparency.note import open_checkpoint
from transparency.verify import verify_bundle

KEY = Ed25519PrivateKey.generate()


def fields(i: int) -> dict[str, Any]:
    return {
        "session_id": f"sess_{i:06d}abcdefghijklmnopqrstu",
        "peer_id": "peer-1",
        "started_at": "2026-11-25T10:00:00.000Z",
        "ended_at": "2026-11-25T10:00:01.250Z",
        "model": "smollm2-135m-instruct",
        "model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "prompt_tokens": 20 + i,
        "completion_tokens": 5,
        "requests": 1,
    }


def filled(path: Path, n: int, **kwargs: Any) -> ReceiptLog:
    log = ReceiptLog(path, KEY, **kwargs)
    for i in range(len(log), len(log) + n):
        log.issue(fields(i))
    return log


def test_memory_holds_hashes_not_entries(tmp_path: Path) -> None:
    """A loop that creates and deletes sessions must not grow memory by whole entries: about
    60 bytes a receipt (tree, index, offsets) where an entry in memory took over a kilobyte."""
    log = filled(tmp_path, 10)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10, 3010):
            log.issue(fields(i))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    log.close()
    assert grown < 3000 * 200, grown


def test_a_receipt_is_found_by_session_id_from_the_journal(tmp_path: Path) -> None:
    log = filled(tmp_path, 70)
    assert log.seq_of(fields(3)["session_id"]) == 3
    assert log.seq_of(fields(69)["session_id"]) == 69
    assert log.seq_of("sess_nobody") is None
    verify_bundle(log.bundle(3), log.verifier)
    log.close()
    again = ReceiptLog(tmp_path, KEY)
    assert again.seq_of(fields(42)["session_id"]) == 42
    assert again.entry(42).receipt["prompt_tokens"] == 62
    verify_bundle(again.bundle(42), again.verifier)
    again.close()


def test_the_index_finds_ids_after_a_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance import journal_index

    monkeypatch.setattr(journal_index, "MERGE_AT", 8)
    log = filled(tmp_path, 30)
    assert [log.seq_of(fields(i)["session_id"]) for i in range(30)] == list(range(30))
    log.close()


def flip_signature(line: bytes) -> bytes:
    at = line.index(b'"signature":"') + len(b'"signature":"') + 5
    return line[:at] + (b"B" if line[at : at + 1] == b"A" else b"A") + line[at + 1 :]


def test_start_up_checks_signatures_only_after_the_checkpoint(tmp_path: Path) -> None:
    filled(tmp_path, 25, checkpoint_interval=10).close()
    checkpoint = tmp_path / CHECKPOINT_NAME
    earlier = checkpoint.read_text()
    assert open_checkpoint(earlier, ReceiptLog(tmp_path, KEY).verifier).size == 25
    filled(tmp_path, 2).close()
    checkpoint.write_text(earlier)  # as after a crash: the last two are not covered
    path = tmp_path / JOURNAL_NAME
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:25], flip_signature(lines[25]), lines[26]]))
    with pytest.raises(JournalError, match="line 26 fails"):
        ReceiptLog(tmp_path, KEY)
    # Before the checkpoint only the receipt's bytes are rehashed; its root vouches for them.
    path.write_bytes(b"".join([flip_signature(lines[0]), *lines[1:]]))
    assert len(ReceiptLog(tmp_path, KEY)) == 27


def test_a_tampered_entry_before_the_checkpoint_stops_start_up(tmp_path: Path) -> None:
    filled(tmp_path, 12).close()
    path = tmp_path / JOURNAL_NAME
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"prompt_tokens":23', b'"prompt_tokens":24', 1))
    with pytest.raises(JournalError, match="signed checkpoint"):
        ReceiptLog(tmp_path, KEY)
    path.write_bytes(good.rsplit(b"\n", 2)[0] + b"\n")  # the last entry removed
    with pytest.raises(JournalError, match="shorter"):
        ReceiptLog(tmp_path, KEY)
    lines = good.splitlines(keepends=True)
    path.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    with pytest.raises(JournalError, match="sequence"):
        ReceiptLog(tmp_path, KEY)
    path.write_bytes(good)
    (tmp_path / CHECKPOINT_NAME).write_text("not a checkpoint\n")
    with pytest.raises(JournalError, match="checkpoint"):
        ReceiptLog(tmp_path, KEY)


def test_an_entry_changed_on_disk_after_start_is_not_served(tmp_path: Path) -> None:
    log = filled(tmp_path, 3)
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(path.read_bytes().replace(b'"prompt_tokens":21', b'"prompt_tokens":29'))
    with pytest.raises(JournalError, match="changed"):
        log.entry(1)
    log.close()


def test_a_torn_last_line_is_cut_and_the_log_goes_on(tmp_path: Path) -> None:
    filled(tmp_path, 4).close()
    path = tmp_path / JOURNAL_NAME
    with path.open("ab") as handle:
        handle.write(b'{"receipt":{"v":1')
    log = filled(tmp_path, 1)
    assert len(log) == 5
    verify_bundle(log.bundle(4), log.verifier)
    log.close()
    assert len(ReceiptLog(tmp_path, KEY)) == 5


def test_a_pull_is_one_snapshot_under_concurrent_appends(tmp_path: Path) -> None:
    """Every pull's checkpoint covers exactly what the pulls so far returned when it reaches
    the end, and never fewer entries than it returned."""
    log = filled(tmp_path, 1)
    stop = threading.Event()

    def append() -> None:
        i = 1000
        while not stop.is_set():
            log.issue(fields(i))
            i += 1

    writer = threading.Thread(target=append)
    writer.start()
    held = 0
    try:
        for _ in range(300):
            size, note, entries = log.pull(held, 3)
            held += len(entries)
            assert held <= size
            assert open_checkpoint(note, log.verifier).size == size
            if len(entries) < 3:
                assert held == size
    finally:
        stop.set()
        writer.join()
    log.close()


def test_a_pull_checkpoint_is_consistent_with_the_next(tmp_path: Path) -> None:
    log = filled(tmp_path, 5)
    first, note_a, _ = log.pull(0, 10)
    log.issue(fields(99))
    second, note_b, _ = log.pull(0, 10)
    proof = log.consistency(first, second)
    verify_consistency(
        first,
        second,
        open_checkpoint(note_a, log.verifier).root,
        open_checkpoint(note_b, log.verifier).root,
        proof.proof,
    )
    log.close()


def test_appends_run_on_the_logs_own_thread(tmp_path: Path) -> None:
    """With every thread of a shared pool busy, a receipt still lands at once."""
    log = filled(tmp_path, 1)
    busy = ThreadPoolExecutor(max_workers=2)
    gate = threading.Event()
    for _ in range(8):
        busy.submit(gate.wait, 30)
    started = time.monotonic()
    body = log.submit(log.issue, fields(7)).result(timeout=5)
    assert time.monotonic() - started < 2
    assert body["seq"] == 1
    gate.set()
    busy.shutdown()
    log.close()
    with pytest.raises(RuntimeError):
        log.submit(log.issue, fields(8))
