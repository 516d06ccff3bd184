"""`make bench`: every benchmark, each printing its ratio against a same-run reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "engine_vs_llama_server.py",
    "sessions.py",
    "logprobs.py",
    "lookup.py",
    "tools.py",
    "rag.py",
    "journal.py",
]


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        # As modules from the repository root: benchmarks share code through `bench.`.
        module = f"bench.{name.removesuffix('.py')}"
        command = [sys.executable, "-m", module]
        failed |= subprocess.run(command, cwd=HERE.parent, check=False).returncode
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
