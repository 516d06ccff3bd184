"""keep-control's process, `keep control keep_serve`, run for real: its socket is 0660 in a
0750 directory, a directory open to others stops it, and on the socket the login throttle
counts the address NGINX forwards."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import KEEP


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="keep-serve-", dir="/tmp") as path:
        yield Path(path)


def environment(scratch: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KEEP_DATABASE_URL": f"sqlite:///{scratch / 'control.sqlite3'}",
        "KEEP_CONTROL_SOCKET": str(scratch / "run" / "control.sock"),
    }


def serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [KEEP, "control", "keep_serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "keep_serve did not bind its socket"
        time.sleep(0.1)


def wait_listening(path: Path) -> None:
    """Until the bound socket accepts a connection. A plain socket, closed at each try: a
    refused connection through httpx's pool leaves its socket to the garbage collector,
    whose ResourceWarning fails the test when the server is slow to listen."""
    deadline = time.monotonic() + 30
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:  # bound, not yet listening
                assert time.monotonic() < deadline, "keep_serve did not listen"
        time.sleep(0.1)


def test_the_socket_is_0660_in_a_0750_directory_and_the_throttle_sees_nginx_address(
    scratch: Path,
) -> None:
    env = environment(scratch)
    migrate = subprocess.run(
        [KEEP, "control", "migrate", "--noinput"], env=env, capture_output=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]
    sock = Path(env["KEEP_CONTROL_SOCKET"])
    process = serve(env)
    try:
        wait_for(sock, process)
        assert stat.S_ISSOCK(sock.lstat().st_mode)
        assert stat.S_IMODE(sock.lstat().st_mode) == 0o660
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o750
        # What NGINX's management listener sends (nginx/keep.conf.j2).
        nginx = {"Host": "localhost", "X-Forwarded-Proto": "https"}
        wait_listening(sock)
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://localhost"
        ) as http:
            page = http.get("/admin/login/", headers=nginx)
            assert page.status_code == 200
            token = page.cookies["csrftoken"]
            failed = http.post(
                "/admin/login/",
                headers={
                    **nginx,
                    "X-Forwarded-For": "203.0.113.9",
                    "Origin": "https://localhost",
                    # A secure cookie, which httpx keeps from this plain-HTTP socket.
                    "Cookie": f"csrftoken={token}",
                },
                data={"username": "admin", "password": "wrong", "csrfmiddlewaretoken": token},
            )
            assert failed.status_code == 200
    finally:
        process.terminate()
        process.communicate(timeout=30)
    with sqlite3.connect(scratch / "control.sqlite3") as db:
        rows = db.execute("SELECT username, address FROM console_loginfailure").fetchall()
    assert rows == [("admin", "203.0.113.9")]


def test_a_socket_directory_open_to_others_stops_start_up(scratch: Path) -> None:
    env = environment(scratch)
    directory = Path(env["KEEP_CONTROL_SOCKET"]).parent
    directory.mkdir()
    directory.chmod(0o755)
    process = serve(env)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert b"open to other users (mode 0755)" in err
    assert not Path(env["KEEP_CONTROL_SOCKET"]).exists()
