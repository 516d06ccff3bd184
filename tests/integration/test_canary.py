"""Nothing a client sends reaches a disk: a canary document, run through a real `keep serve`,
is searched for in every file created or modified during the run."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from rag.embedder import Embedder
from tests.conftest import MODEL, ROOT, free_port, start_server, stop_server

SCAN_ROOTS = [ROOT, Path("/tmp"), Path("/var/tmp")]
SKIP_DIRS = {"/proc", "/sys", "/dev"}
# Kernel file systems hold no client data, and some of their files block when read
# (/proc/kmsg): a debootstrap root under /tmp (tests/ansible) has its own /proc mounted.
PSEUDO_FS = {
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "nsfs",
}


def pseudo_mounts() -> set[str]:
    """Mount points of kernel file systems, from /proc/self/mountinfo."""
    found = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        if tail.split()[0] in PSEUDO_FS:
            found.add(fields.split()[4].encode().decode("unicode_escape"))
    return found


def changed_files(roots: list[Path], since: float) -> Iterator[Path]:
    skip = SKIP_DIRS | pseudo_mounts()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
            for name in filenames:
                path = Path(dirpath, name)
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if path.is_symlink() or not path.is_file():
                    continue
                if max(st.st_mtime, st.st_ctime) >= since:
                    yield path


def find(needles: list[bytes], roots: list[Path], since: float) -> list[Path]:
    hits = []
    for path in changed_files(roots, since):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(needle in data for needle in needles):
            hits.append(path)
    return hits


def test_canary_and_its_vectors_never_touch_disk(tmp_path: Path, embedder: Embedder) -> None:
    canary = "KEEPCANARY" + secrets.token_hex(8)
    text = f"The vault code for the Zorblax archive is {canary}. Keep it secret."
    vectors = embedder.encode([text, canary])
    needles = [canary.encode(), canary.encode("utf-16-le")]
    needles += [v.astype("<f4").tobytes()[:32] for v in vectors]  # raw embedding bytes
    since = time.time() - 1
    state = tmp_path / "state"
    state.mkdir()
    server = start_server(state, free_port())
    try:
        auth = {"Authorization": f"Bearer {server.key}"}
        with httpx.Client(base_url=server.base_url, headers=auth, timeout=120) as client:
            session = client.post("/v1/sessions").json()["id"]
            docs = {"documents": [{"name": "vault.txt", "text": text}]}
            assert client.post(f"/v1/sessions/{session}/documents", json=docs).status_code == 201
            files = [("file", ("vault.md", text.encode(), "text/markdown"))]
            assert client.post(f"/v1/sessions/{session}/documents", files=files).status_code == 201
            ask = {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Repeat the vault code {canary}."}],
                "max_tokens": 40,
                "temperature": 0,
            }
            answer = client.post(
                "/v1/chat/completions", json=ask, headers={"X-Keep-Session": session}
            )
            assert answer.status_code == 200
            assert answer.json()["keep"]["citations"]
            emb = client.post(
                "/v1/embeddings", json={"model": embedder.name, "input": [text, canary]}
            )
            assert emb.status_code == 200
            assert client.delete(f"/v1/sessions/{session}").status_code == 200
    finally:
        stop_server(server)
    assert server.log().strip()  # the server did log, so its log file is part of the scan
    leaks = find(needles, [*SCAN_ROOTS, state], since)
    assert leaks == []

    # The scan must be able to find what it looks for.
    probe = Path("/tmp") / f"keep-canary-probe-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"prefix " + needles[2] + b" suffix")
        assert find(needles, [Path("/tmp")], since) == [probe]
        probe.write_text(f"text {canary} text")
        assert probe in find(needles, [Path("/tmp")], since)
    finally:
        probe.unlink()


def test_the_scan_skips_a_proc_mounted_below_its_roots(tmp_path: Path) -> None:
    """A debootstrap root under /tmp has its own /proc mounted while tests/ansible run; its
    /proc/kmsg blocks a reader forever, which hung a whole clean-clone run here."""
    import subprocess
    import threading

    target = tmp_path / "root" / "proc"
    target.mkdir(parents=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(target)], check=True)
    try:
        assert str(target) in pseudo_mounts()
        found: list[list[Path]] = []
        scan = threading.Thread(target=lambda: found.append(find([b"x"], [tmp_path], 0.0)))
        scan.daemon = True
        scan.start()
        scan.join(timeout=60)
        assert not scan.is_alive(), "the scan read a file of the mounted /proc"
        assert found == [[]]
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)
