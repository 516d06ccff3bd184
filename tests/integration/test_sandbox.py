"""The appliance under the sandbox its unit declares, as far as this machine can build it
without systemd as PID 1: no writable executable memory (the kernel's PR_SET_MDWE, what
MemoryDenyWriteExecute=yes enforces), /proc limited to processes (ProcSubset=pid,
ProtectProc=invisible), no network (PrivateNetwork=yes) and no new privileges. A real chat
and a real embedding must still work, over the API's unix socket. Needs root (unshare);
skipped only with KEEP_E2E=0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from appliance.auth import key_digest
from tests.conftest import TEST_KEY, admin_ready, chat_body

KEEP = str(Path(sys.executable).parent / "keep")

# Sets MDWE (refuse W+X mappings, inherited across exec) and no_new_privs, then execs argv.
LAUNCH = textwrap.dedent(
    """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit("PR_SET_MDWE is not supported by this kernel (6.3 or newer needed)")
    os.execv(sys.argv[1], sys.argv[1:])
    """
)
# The control: a W+X mapping, which MDWE must refuse.
WX = textwrap.dedent(
    """
    import mmap, sys
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        print("refused")
    else:
        print("allowed")
    """
)


def sandboxed(*argv: str) -> list[str]:
    """unshare: own mount, network and pid namespaces; /proc remounted with only processes,
    and only our own; then LAUNCH."""
    inner = (
        "mount -t proc -o subset=pid,hidepid=invisible proc /proc && "
        f'exec {sys.executable} -c "$0" "$@"'
    )
    return ["unshare", "--mount", "--net", "--pid", "--fork", "sh", "-c", inner, LAUNCH, *argv]


def listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.environ.get("KEEP_E2E") == "0":
        pytest.skip("KEEP_E2E=0: sandbox tests switched off explicitly")
    if os.geteuid() != 0:
        pytest.fail("the sandbox test needs root (unshare); set KEEP_E2E=0 to skip it")


def test_the_sandbox_refuses_writable_executable_memory() -> None:
    plain = subprocess.run([sys.executable, "-c", WX], capture_output=True, text=True)
    assert plain.stdout.strip() == "allowed"
    boxed = subprocess.run(
        sandboxed(sys.executable, "-c", WX), capture_output=True, text=True, timeout=60
    )
    assert boxed.stdout.strip() == "refused", boxed.stderr


def test_the_appliance_serves_chat_and_embeddings_inside_the_sandbox(tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEEP_")},
        "KEEP_STATE_DIR": str(tmp_path / "state"),
        "KEEP_ADMIN_SOCKET": str(tmp_path / "admin.sock"),
        "KEEP_LISTEN_SOCKET": str(sock),
        "KEEP_MAX_SESSIONS": "2",
        "HF_HUB_OFFLINE": "1",
    }
    log = tmp_path / "keep.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            sandboxed(KEEP, "serve"), env=env, stdout=out, stderr=out, start_new_session=True
        )
    transport = httpx.HTTPTransport(uds=str(sock))
    # Behind NGINX (a listen socket) keys come from control's policy, bound to a peer.
    auth = {"Authorization": f"Bearer {TEST_KEY}", "X-Keep-Peer": "10.66.0.2"}
    policy = {
        "version": 1,
        "keys": [{"sha256": key_digest(TEST_KEY), "peer_id": "peer-a", "client_id": "acme"}],
        "peers": [{"id": "peer-a", "address": "10.66.0.2"}],
    }
    try:
        with httpx.Client(transport=transport, base_url="http://keep", timeout=120) as http:
            deadline = time.monotonic() + 120
            while not (listening(sock) and admin_ready(tmp_path / "admin.sock")):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            admin = httpx.HTTPTransport(uds=str(tmp_path / "admin.sock"))
            with httpx.Client(transport=admin, base_url="http://admin") as control:
                assert control.put("/admin/policy", json=policy).status_code == 200
            assert http.get("/readyz", headers=auth).status_code == 200
            reply = http.post("/v1/chat/completions", json=chat_body(), headers=auth)
            assert reply.status_code == 200, reply.text
            assert "Paris" in reply.json()["choices"][0]["message"]["content"]
            embedded = http.post(
                "/v1/embeddings",
                json={"model": "all-minilm-l6-v2", "input": ["a sentence"]},
                headers=auth,
            )
            assert embedded.status_code == 200, embedded.text
            assert len(embedded.json()["data"][0]["embedding"]) == 384
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
