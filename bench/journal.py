"""The receipt journal at a million receipts: start-up time and peak RSS of opening it.

Builds a journal of `--entries` real receipts (signed with the real code, one buffered write,
one fsync), keeps a signed checkpoint over it as the appliance does at shutdown, then opens it
in a fresh interpreter for each case and prints seconds and peak RSS:
- `checkpoint`: the log as it starts after a clean stop (lines rehashed, no signatures);
- `no checkpoint`: after a crash before the first checkpoint (every signature checked);
- `before` (with `--before REV`): the journal code at REV, which held every entry in memory.
The ratio printed is start-up with the checkpoint against start-up checking every signature.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.journal import CHECKPOINT_NAME, JOURNAL_NAME, Entry  # noqa: E402
from transparency import receipt as receipts  # noqa: E402
from transparency.merkle import MerkleTree  # noqa: E402
from transparency.note import Checkpoint, raw_public  # noqa: E402

KEY_NAME = "receipt-signing.key"
OPEN = """
import json, sys, time
from pathlib import Path
from appliance.journal import ReceiptLog, load_or_create_key

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

state = Path(sys.argv[1])
key = load_or_create_key(state / "receipt-signing.key")
base = status("VmRSS")
started = time.perf_counter()
log = ReceiptLog(state, key)
took = time.perf_counter() - started
assert len(log) == int(sys.argv[2]), len(log)
import appliance.journal
assert appliance.journal.__file__.startswith(sys.argv[3]), appliance.journal.__file__
print(json.dumps({"seconds": took, "peak_mib": status("VmHWM"), "rss_mib": status("VmRSS"),
                  "grown_mib": status("VmRSS") - base}))
"""


def build(state: Path, n: int) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = Ed25519PrivateKey.generate()
    (state / KEY_NAME).write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    public = raw_public(key)
    name = receipts.log_name(public)
    tree = MerkleTree()
    with (state / JOURNAL_NAME).open("wb") as journal:
        for seq in range(n):
            body = {
                "v": receipts.VERSION,
                "appliance_id": receipts.appliance_id(public),
                "seq": seq,
                "session_id": f"sess_{seq:032d}",
                "peer_id": "peer-1",
                "started_at": "2026-11-25T10:00:00.000Z",
                "ended_at": "2026-11-25T10:00:01.250Z",
                "model": "smollm2-135m-instruct",
                "model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                "prompt_tokens": 20 + seq % 500,
                "completion_tokens": 5 + seq % 200,
                "requests": 1 + seq % 3,
            }
            journal.write(Entry(body, receipts.sign(body, key)).line())
            tree.append(receipts.leaf(body))
        journal.flush()
    note = Checkpoint(name, n, tree.root()).sign(name, key)
    (state / CHECKPOINT_NAME).write_text(note)


def measure(state: Path, n: int, pythonpath: Path = ROOT) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", OPEN, str(state), str(n), str(pythonpath)],
        capture_output=True,
        text=True,
        check=True,
        # `-c` puts the working directory first on sys.path: run where no other code is.
        cwd=state,
        env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"},
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def code_at(rev: str, into: Path) -> Path:
    """The journal and the code it imports as they were at `rev`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "appliance", "transparency", "durable"],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def show(case: str, result: dict[str, float]) -> None:
    print(
        f"{case:>16}: {result['seconds']:8.2f} s, RSS {result['rss_mib']:7.1f} MiB "
        f"(+{result['grown_mib']:.1f} MiB for the journal; peak {result['peak_mib']:.1f} MiB)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--before", help="also measure the journal code at this git revision")
    parser.add_argument(
        "--skip-full", action="store_true", help="skip the start that checks every signature"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keep-bench-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir(mode=0o700)
        started = time.perf_counter()
        build(state, args.entries)
        print(f"built {args.entries} receipts in {time.perf_counter() - started:.1f} s", flush=True)
        fast = measure(state, args.entries)
        show("checkpoint", fast)
        checkpoint = (state / CHECKPOINT_NAME).read_bytes()
        (state / CHECKPOINT_NAME).unlink()
        full = None if args.skip_full else measure(state, args.entries)
        if full is not None:
            show("no checkpoint", full)
        if args.before:
            (state / CHECKPOINT_NAME).unlink(missing_ok=True)
            old = code_at(args.before, Path(tmp) / "before")
            show(f"before {args.before}", measure(state, args.entries, old))
        (state / CHECKPOINT_NAME).write_bytes(checkpoint)
        if full is not None:
            print(f"ratio (checkpoint / no checkpoint): {fast['seconds'] / full['seconds']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
